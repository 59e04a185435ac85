// Recording rules: the dashboard's series, and one error ratio and one slow
// ratio per burn-rate window, so that the alerts read a handful of series.
local lib = import 'lib.libsonnet';

{
  prometheusRules+:: {
    local c = $._config,
    local m(extra=[]) = lib.matchers(c, extra),
    local by = 'job, instance',

    groups+: [
      lib.group(c, 'llm-cache-exporter.rules', [
        {
          record: 'llmcache:cache_requests:rate5m',
          expr: 'sum by (%s, cache) (rate(llmcache_cache_requests_total{%s}[5m]))' % [by, m()],
        },
        {
          // No lookups, no ratio: the series is absent rather than NaN.
          record: 'llmcache:cache_hit_ratio:rate5m',
          expr: |||
            sum by (%(by)s, cache) (rate(llmcache_cache_hits_total{%(m)s}[5m]))
              / (sum by (%(by)s, cache) (rate(llmcache_cache_requests_total{%(m)s}[5m])) > 0)
          ||| % { by: by, m: m() },
        },
      ] + [
        {
          record: 'llmcache:operation_duration_seconds:p%d_5m' % (q * 100),
          expr: 'histogram_quantile(%s, sum by (%s, operation, le) (rate(llmcache_operation_duration_seconds_bucket{%s}[5m])))'
                % [lib.num(q), by, m()],
        }
        for q in [0.5, 0.95, 0.99]
      ] + [
        {
          record: 'llmcache:operations:rate5m',
          expr: 'sum by (%s, operation) (rate(llmcache_operation_duration_seconds_count{%s}[5m]))' % [by, m()],
        },
        {
          record: 'llmcache:operation_errors:rate5m',
          expr: 'sum by (%s, operation, kind) (rate(llmcache_operation_errors_total{%s}[5m]))' % [by, m()],
        },
        {
          record: 'llmcache:workload_skipped_ratio:rate5m',
          expr: |||
            sum by (%(by)s) (rate(llmcache_workload_skipped_total{%(m)s}[5m]))
              / (sum by (%(by)s) (rate(llmcache_workload_scheduled_total{%(m)s}[5m])) > 0)
          ||| % { by: by, m: m() },
        },
        {
          // maxmemory 0 means "no limit": dividing by (x > 0) drops those series.
          record: 'llmcache:redis_memory_used:ratio',
          expr: 'llmcache_redis_used_memory_bytes{%s} / (llmcache_redis_maxmemory_bytes{%s} > 0)' % [m(), m()],
        },
      ]),

      lib.group(c, 'llm-cache-exporter.slo', [
        {
          // The error budget: the share of operations allowed to fail.
          record: 'llmcache:slo_error_budget:ratio',
          expr: 'vector(%s)' % lib.num(1 - lib.ratio('slo.errors.objective', c.slo.errors.objective)),
        },
        {
          // The latency budget: the share of successful operations allowed
          // to be slower than the threshold.
          record: 'llmcache:slo_latency_budget:ratio',
          expr: 'vector(%s)' % lib.num(1 - lib.ratio('slo.latency.objective', c.slo.latency.objective)),
        },
      ] + std.flattenArrays([
        [
          {
            // Failed operations over operations; absent over a window with
            // no operations, so an idle canary never divides by zero.
            record: 'llmcache:operation_error_ratio:rate%s' % w,
            expr: |||
              sum by (%(by)s, operation) (rate(llmcache_operation_errors_total{%(m)s}[%(w)s]))
                / (sum by (%(by)s, operation) (rate(llmcache_operation_duration_seconds_count{%(m)s}[%(w)s])) > 0)
            ||| % { by: by, m: m(), w: w },
          },
          {
            // Successful operations slower than the threshold over successful
            // operations; failures count against the error budget only.
            record: 'llmcache:operation_slow_ratio:rate%s' % w,
            expr: |||
              1 - (
                sum by (%(by)s, operation) (rate(llmcache_operation_duration_seconds_bucket{%(fast)s}[%(w)s]))
                  / (sum by (%(by)s, operation) (rate(llmcache_operation_duration_seconds_count{%(ok)s}[%(w)s])) > 0)
              )
            ||| % {
              by: by,
              w: w,
              ok: m(['outcome!="error"']),
              fast: m(['outcome!="error"', 'le="%s"' % lib.bucketLabel(c)]),
            },
          },
        ]
        for w in lib.sloWindows(c)
      ])),
    ],
  },
}
