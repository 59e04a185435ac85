// Helpers shared by rules.libsonnet and alerts.libsonnet.
{
  // `selector` joined with more matchers, for inside `{...}`.
  matchers(config, extra=[]):: std.join(', ', [config.selector] + extra),

  // A number as Prometheus and the daemon print it (0.99, not
  // 0.98999999999999999). jsonnet's %g cannot print 0 or negatives.
  num(x)::
    if x == 0 then '0'
    else if x < 0 then '-' + $.num(-x)
    else '%.15g' % x,

  // A Prometheus duration such as '5m' in seconds, to order windows by.
  seconds(duration)::
    local unit = duration[std.length(duration) - 1];
    local value = std.parseInt(std.substr(duration, 0, std.length(duration) - 1));
    local scale = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
    assert std.objectHas(scale, unit) : 'mixin: %s is not a duration like 30s, 5m, 1h or 3d' % duration;
    value * scale[unit],

  // Every window the burn-rate alerts read, shortest first, once each.
  sloWindows(config)::
    local all = std.flattenArrays([[w.long, w.short] for w in config.slo.windows]);
    std.set(all, function(w) $.seconds(w)),

  // The `le` label of the bucket at `threshold`, printed as the daemon
  // prints it.
  bucketLabel(config)::
    local threshold = config.slo.latency.threshold;
    assert std.member(config.latencyBuckets, threshold) :
           'mixin: slo.latency.threshold %s is not a bucket bound of llmcache_operation_duration_seconds; pick one of %s'
           % [$.num(threshold), std.join(', ', [$.num(b) for b in config.latencyBuckets])];
    $.num(threshold),

  // Fails the build unless `value` lies strictly between 0 and 1.
  ratio(name, value)::
    assert std.isNumber(value) && value > 0 && value < 1 :
           'mixin: %s must be a ratio strictly between 0 and 1, got %s' % [name, if std.isNumber(value) then $.num(value) else std.toString(value)];
    value,

  runbook(config, alert):: config.runbookUrl % std.asciiLower(alert),

  // A rule group, with the configured interval if there is one.
  group(config, name, rules)::
    { name: name }
    + (if config.interval == null then {} else { interval: config.interval })
    + { rules: rules },
}
