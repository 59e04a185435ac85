// Alerting rules. Symptoms page (`critical`): operations failing or slow
// beyond their budget, a backend down, the canary or the exporter gone.
// Causes open a ticket (`warning`).
local lib = import 'lib.libsonnet';

{
  prometheusAlerts+:: {
    local c = $._config,
    local m(extra=[]) = lib.matchers(c, extra),
    local pct(x) = lib.num(x * 100) + '%',

    local alert(name, expr, forDuration, severity, labels, summary, description) = {
      alert: name,
      expr: expr,
      'for': forDuration,
      labels: { severity: severity } + labels,
      annotations: {
        summary: summary,
        description: description,
        runbook_url: lib.runbook(c, name),
      },
    },

    // One alert per window pair: both windows above `factor` times the
    // budget. `what` names the ratio's records and `budget` the objective.
    local burn(name, what, objective, sentence) = [
      local threshold = '(%s * %s)' % [lib.num(w.factor), lib.num(1 - objective)];
      alert(
        name,
        |||
          llmcache:operation_%(what)s_ratio:rate%(long)s{%(m)s} > %(t)s
          and
          llmcache:operation_%(what)s_ratio:rate%(short)s{%(m)s} > %(t)s
        ||| % { what: what, long: w.long, short: w.short, m: m(), t: threshold },
        w['for'],
        w.severity,
        { long: w.long, short: w.short },
        '{{ $labels.operation }} burns its %s budget %sx too fast on {{ $labels.instance }}'
        % [if what == 'error' then 'error' else 'latency', lib.num(w.factor)],
        sentence % { window: w.long, short: w.short, factor: lib.num(w.factor), objective: pct(objective) },
      )
      for w in c.slo.windows
    ],

    groups+: [
      lib.group(
        c,
        'llm-cache-exporter.alerts',
        burn(
          'LLMCacheErrorBudgetBurn',
          'error',
          lib.ratio('slo.errors.objective', c.slo.errors.objective),
          'Over %(window)s (and over %(short)s), {{ $value | humanizePercentage }} of {{ $labels.operation }} operations failed: the budget of the %(objective)s success objective burns more than %(factor)s times as fast as it may. llmcache_operation_errors_total{operation="{{ $labels.operation }}"} says which kind.'
        )
        + burn(
          'LLMCacheLatencyBudgetBurn',
          'slow',
          lib.ratio('slo.latency.objective', c.slo.latency.objective),
          'Over %(window)s (and over %(short)s), {{ $value | humanizePercentage }} of successful {{ $labels.operation }} operations took longer than '
          + lib.bucketLabel(c) + 's: the budget of the %(objective)s latency objective burns more than %(factor)s times as fast as it may.'
        )
        + [
          alert(
            'LLMCacheCanaryStalled',
            |||
              (
                increase(llmcache_workload_scheduled_total{%(m)s}[%(window)s]) == 0
                and on (job, instance) llmcache_workload_target_rate{%(m)s} * %(seconds)d >= 2
              )
              and on (job, instance) up{%(m)s} == 1
            ||| % { m: m(), window: c.canaryStalled.window, seconds: lib.seconds(c.canaryStalled.window) },
            c.canaryStalled['for'],
            'critical',
            {},
            'The canary on {{ $labels.instance }} has stopped scheduling operations',
            'The exporter answers scrapes, and its workload.rate calls for operations, but it scheduled none over %s: every SLO alert is blind.' % c.canaryStalled.window,
          ),
          alert(
            'LLMCacheBackendDown',
            |||
              llmcache_backend_up{%(m)s} == 0
              or avg_over_time(llmcache_backend_up{%(m)s}[%(window)s]) < %(share)s
            ||| % { m: m(), window: c.backendDown.flapWindow, share: lib.num(1 - c.backendDown.flapShare) },
            c.backendDown['for'],
            'critical',
            {},
            '{{ $labels.backend }} is down for {{ $labels.instance }}',
            'The {{ $labels.backend }} backend has failed its health probes for %s, or for more than %s of the last %s while flapping.'
            % [c.backendDown['for'], pct(c.backendDown.flapShare), c.backendDown.flapWindow],
          ),
          alert(
            'LLMCacheLowHitRate',
            |||
              llmcache:cache_hit_ratio:rate5m{%(caches)s} < %(threshold)s
              and llmcache:cache_requests:rate5m{%(m)s} > %(min)s
            ||| % {
              caches: m(['cache=~"%s"' % std.join('|', c.hitRate.caches)]),
              m: m(),
              threshold: lib.num(c.hitRate.threshold),
              min: lib.num(c.hitRate.minRate),
            },
            c.hitRate['for'],
            'warning',
            {},
            'Low {{ $labels.cache }} cache hit rate on {{ $labels.instance }}',
            'The {{ $labels.cache }} cache answered {{ $value | humanizePercentage }} of lookups from memory over 5m (threshold %s).'
            % pct(c.hitRate.threshold),
          ),
          alert(
            'LLMCacheMemoryPressure',
            'llmcache_memory_pressure{%s} == 1' % m(['scope=~"%s"' % std.join('|', c.memoryPressure.scopes)]),
            c.memoryPressure['for'],
            'warning',
            {},
            'Memory pressure ({{ $labels.scope }}) on {{ $labels.instance }}',
            'The memory monitor has seen {{ $labels.scope }} memory pressure for %s and shrunk the cache pool. (Redis\'s memory is LLMCacheRedisNearMaxmemory\'s to watch.)'
            % c.memoryPressure['for'],
          ),
          alert(
            'LLMCacheRedisNearMaxmemory',
            |||
              sum by (job, instance) (increase(llmcache_redis_error_replies_total{%(oom)s}[%(window)s])) > 0
              or (
                sum by (job, instance) (increase(llmcache_redis_lost_keys_total{%(m)s}[%(window)s])) > 0
                and on (job, instance) max by (job, instance) (llmcache:redis_memory_used:ratio{%(m)s}) > %(ratio)s
              )
            ||| % { m: m(), oom: m(['code="OOM"']), window: c.redisMaxmemory.window, ratio: lib.num(c.redisMaxmemory.ratio) },
            c.redisMaxmemory['for'],
            'warning',
            {},
            'Redis at maxmemory is losing the canary\'s data ({{ $labels.instance }})',
            'Over %s, Redis refused the canary\'s writes with OOM (maxmemory-policy noeviction) or, above %s of maxmemory, evicted chat histories the canary wrote before their TTL ({{ $value | printf "%%.0f" }} in all).'
            % [c.redisMaxmemory.window, pct(c.redisMaxmemory.ratio)],
          ),
          alert(
            'LLMCacheRedisFillingNoEviction',
            |||
              llmcache:redis_memory_used:ratio{%(m)s} > %(ratio)s
              and on (job, instance, node) llmcache_redis_info{%(policy)s} == 1
            ||| % { m: m(), policy: m(['maxmemory_policy="noeviction"']), ratio: lib.num(c.redisNoEviction.ratio) },
            c.redisNoEviction['for'],
            'warning',
            {},
            'Redis {{ $labels.node }} will refuse writes when full ({{ $labels.instance }})',
            'Redis {{ $labels.node }} has been above %s of maxmemory for %s under maxmemory-policy noeviction (now {{ $value | humanizePercentage }}): when it is full it refuses every write with OOM, the application\'s included.'
            % [pct(c.redisNoEviction.ratio), c.redisNoEviction['for']],
          ),
          alert(
            'LLMCacheVectorRecallLow',
            |||
              sum by (job, instance) (rate(llmcache_vector_recall_ratio_sum{%(m)s}[%(window)s]))
                / (sum by (job, instance) (rate(llmcache_vector_recall_ratio_count{%(m)s}[%(window)s])) > 0)
                < %(min)s
              and sum by (job, instance) (increase(llmcache_vector_recall_checks_total{%(m)s}[%(window)s])) >= %(checks)d
            ||| % {
              m: m(),
              window: c.vectorRecall.window,
              min: lib.num(lib.ratio('vectorRecall.min', c.vectorRecall.min)),
              checks: c.vectorRecall.minChecks,
            },
            c.vectorRecall['for'],
            'critical',
            {},
            'The vector store answers wrong on {{ $labels.instance }}: recall@k {{ $value | humanizePercentage }}',
            'Over %s, Chroma\'s nearest neighbours matched exact search over the canary\'s own records only {{ $value | humanizePercentage }} of the time (threshold %s). It is up and may be fast: its answers are wrong.'
            % [c.vectorRecall.window, pct(c.vectorRecall.min)],
          ),
          alert(
            'LLMCacheSemanticCacheImprecise',
            |||
              sum by (job, instance, cache) (rate(llmcache_cache_semantic_verifications_total{%(different)s}[%(window)s]))
                / (sum by (job, instance, cache) (rate(llmcache_cache_semantic_verifications_total{%(m)s}[%(window)s])) > 0)
                > %(max)s
              and sum by (job, instance, cache) (increase(llmcache_cache_semantic_verifications_total{%(m)s}[%(window)s])) >= %(checks)d
            ||| % {
              m: m(),
              different: m(['result="different"']),
              window: c.semanticPrecision.window,
              max: lib.num(lib.ratio('semanticPrecision.maxDifferent', c.semanticPrecision.maxDifferent)),
              checks: c.semanticPrecision.minVerifications,
            },
            c.semanticPrecision['for'],
            'warning',
            {},
            'The semantic {{ $labels.cache }} cache serves other answers than the store on {{ $labels.instance }}',
            'Over %s, {{ $value | humanizePercentage }} of verified semantic hits returned other top-k ids than Chroma did for the same query (threshold %s): cache.similarity.distance_threshold is too loose for this embedding model.'
            % [c.semanticPrecision.window, pct(c.semanticPrecision.maxDifferent)],
          ),
          alert(
            'LLMCacheWorkloadLagging',
            |||
              llmcache:workload_skipped_ratio:rate5m{%(m)s} > %(skipped)s
              or llmcache_workload_lag_seconds{%(m)s} > %(lag)s
            ||| % { m: m(), skipped: lib.num(c.workloadLagging.skippedRatio), lag: lib.num(c.workloadLagging.lagSeconds) },
            c.workloadLagging['for'],
            'warning',
            {},
            'The canary\'s workload is falling behind on {{ $labels.instance }}',
            'The workload is skipping ticks or starting them late (value {{ $value | printf "%%.2f" }}; thresholds: %s skipped, or %ss lag).'
            % [pct(c.workloadLagging.skippedRatio), lib.num(c.workloadLagging.lagSeconds)],
          ),
          alert(
            'LLMCacheExporterDown',
            |||
              up{%(m)s} == 0
              or absent(up{%(m)s})
            ||| % { m: m() },
            c.exporterDown['for'],
            'critical',
            {},
            'llm-cache-exporter is down or missing',
            'Prometheus has no successful scrape of {%s} for %s: nothing is watching the cache.' % [m(), c.exporterDown['for']],
          ),
          alert(
            'LLMCacheConfigReloadFailed',
            'llmcache_config_last_reload_successful{%s} == 0' % m(),
            c.configReloadFailed['for'],
            'warning',
            {},
            'llm-cache-exporter refused its new configuration ({{ $labels.instance }})',
            'The last reload of llm-cache-exporter\'s configuration (or of its web config or certificates) failed; it is still running the previous one, and the next restart will fail to start with the files as they are.',
          ),
        ],
      ),
      lib.group(
        c,
        'llm-cache-exporter.fleet',
        local p(extra=[]) = std.join(', ', [c.probeSelector] + extra);
        [
          alert(
            'LLMCacheProbeFailing',
            'probe_success{%s} == 0' % p(),
            c.probeFailing['for'],
            'critical',
            {},
            '{{ $labels.instance }} fails its {{ $labels.job }} probe',
            'Every /probe of {{ $labels.instance }} by {{ $labels.job }} has failed for %s. The probe\'s debug output (add &debug=true to its URL) says which step failed and why.'
            % c.probeFailing['for'],
          ),
          alert(
            'LLMCacheAppHitRateLow',
            |||
              sum by (job, instance) (rate(llmcache_app_cache_hits_total{%(p)s}[%(window)s]))
                / (
                  sum by (job, instance) (rate(llmcache_app_cache_hits_total{%(p)s}[%(window)s]))
                  + sum by (job, instance) (rate(llmcache_app_cache_misses_total{%(p)s}[%(window)s]))
                )
                < %(threshold)s
              and
                sum by (job, instance) (rate(llmcache_app_cache_hits_total{%(p)s}[%(window)s]))
                + sum by (job, instance) (rate(llmcache_app_cache_misses_total{%(p)s}[%(window)s]))
                > %(minRate)s
            ||| % {
              p: p(),
              window: c.appHitRate.window,
              threshold: lib.num(lib.ratio('appHitRate.threshold', c.appHitRate.threshold)),
              minRate: lib.num(c.appHitRate.minRate),
            },
            c.appHitRate['for'],
            'warning',
            {},
            'The application cache at {{ $labels.instance }} hits {{ $value | humanizePercentage }} of lookups',
            'Over %s, the cache of the application at {{ $labels.instance }} answered {{ $value | humanizePercentage }} of its lookups, below %s, from its own counters (llmcache_app_cache_hits_total and _misses_total, read from its /health).'
            % [c.appHitRate.window, pct(c.appHitRate.threshold)],
          ),
          alert(
            'LLMCacheAppMemoryPressure',
            'llmcache_app_memory_pressure{%s} == 1' % p(),
            c.appMemoryPressure['for'],
            'warning',
            {},
            'The application at {{ $labels.instance }} reports memory pressure',
            'The application at {{ $labels.instance }} has reported memory_pressure true in its /health for %s: its cache is likely shrinking, and its hit rate and latency with it.'
            % c.appMemoryPressure['for'],
          ),
          alert(
            'LLMCacheAppUnhealthy',
            'llmcache_app_status{%s} == 1' % p(['status="unhealthy"']),
            c.appUnhealthy['for'],
            'critical',
            {},
            'The application at {{ $labels.instance }} reports itself unhealthy',
            'The application at {{ $labels.instance }} has reported status unhealthy in its /health for %s; llmcache_app_component_up says which component is down.'
            % c.appUnhealthy['for'],
          ),
        ],
      ),
      lib.group(
        c,
        'llm-cache-exporter.census',
        local groups = std.join('|', c.census.ttlRequiredGroups);
        // The census's series come from the canary's job and, for each
        // probed target with a census, from the probe jobs: `build(matchers)`
        // once for each, joined by `or`.
        local p(extra=[]) = std.join(', ', [c.probeSelector] + extra);
        local both(build) = '(%s)\nor\n(%s)' % [std.rstripChars(build(m), '\n'), std.rstripChars(build(p), '\n')];
        [
          alert(
            'LLMCacheChatKeysWithoutTTL',
            both(function(m) 'llmcache_census_redis_keys_without_ttl{%s} > 0' % m(['group=~"%s"' % groups])),
            c.census['for'],
            'warning',
            {},
            '{{ $value | printf "%.0f" }} keys of group {{ $labels.group }} have no TTL ({{ $labels.instance }})',
            'The census found {{ $value | printf "%%.0f" }} keys of group {{ $labels.group }} without a TTL for %s: they never expire, and grow Redis\'s memory until something deletes them. This group must carry TTLs (census.ttlRequiredGroups in the mixin config).'
            % c.census['for'],
          ),
          alert(
            'LLMCacheChatHistoryUnbounded',
            both(function(m) 'llmcache_census_redis_length{%s} > %d' % [m(['quantile="1"']), c.census.maxListLength]),
            c.census['for'],
            'warning',
            {},
            'A key of group {{ $labels.group }} holds {{ $value | printf "%.0f" }} elements ({{ $labels.instance }})',
            'The longest key of group {{ $labels.group }} holds {{ $value | printf "%%.0f" }} elements, more than %d: a history that is never trimmed grows without bound, and every read of it costs more.'
            % c.census.maxListLength,
          ),
          alert(
            'LLMCacheVectorCollectionGrowing',
            both(function(m) |||
              predict_linear(llmcache_census_chroma_records{%(m)s}[%(window)s], %(horizon)d) > %(max)d
              and llmcache_census_chroma_records{%(m)s} <= %(max)d
            ||| % {
              m: m(['collection!="other"']),
              window: c.census.growthWindow,
              horizon: lib.seconds(c.census.growthHorizon),
              max: c.census.maxCollectionRecords,
            }),
            c.census['for'],
            'warning',
            {},
            'Collection {{ $labels.collection }} will pass %d records within %s ({{ $labels.instance }})' % [c.census.maxCollectionRecords, c.census.growthHorizon],
            'At its growth over the last %s, collection {{ $labels.collection }} will hold more than %d records within %s ({{ $value | printf "%%.0f" }} predicted).'
            % [c.census.growthWindow, c.census.maxCollectionRecords, c.census.growthHorizon],
          ),
          alert(
            'LLMCacheCensusStale',
            both(function(m) |||
              time() - llmcache_census_last_success_timestamp_seconds{%(m)s} > 3 * %(interval)d
              or (
                llmcache_census_pass_duration_seconds{%(m)s}
                unless on (job, instance, store) llmcache_census_last_success_timestamp_seconds{%(m)s}
              )
            ||| % { m: m(), interval: lib.seconds(c.census.interval) }),
            c.census['for'],
            'warning',
            {},
            'The census of {{ $labels.store }} has not succeeded for three intervals ({{ $labels.instance }})',
            'No census pass of {{ $labels.store }} has succeeded for more than three intervals of %s: its series are old. The exporter\'s log says why (a NOPERM names the command its ACL user needs).'
            % c.census.interval,
          ),
        ],
      ),
    ],
  },
}
