// The Grafana dashboard, rendered from the mixin's config by scripts/mixin.sh
// into dashboards/llm-cache-exporter.json (plain jsonnet: grafonnet is not
// packaged). The SLO row reads the recording rules of the configured
// windows, with the configured objectives drawn as its lines, and the
// variables list the jobs the configured selector picks, so a mixin with
// other windows or a renamed job renders a dashboard whose panels have data.
local lib = import 'lib.libsonnet';

{
  grafanaDashboards+:: {
    local c = $._config,
    local windows = lib.sloWindows(c),
    // The shortest window, the longest, and the first paging pair's long one.
    local short = windows[0],
    local long = windows[std.length(windows) - 1],
    local page = c.slo.windows[0],
    local errorBudget = 1 - c.slo.errors.objective,
    local slowBudget = 1 - c.slo.latency.objective,
    local pct(x) = lib.num(x * 100) + ' %',

    local ds = { type: 'prometheus', uid: '${datasource}' },
    local variable(name, label, query) = {
      name: name,
      label: label,
      type: 'query',
      datasource: ds,
      definition: query,
      query: { query: query, refId: name },
      refresh: 2,
      includeAll: true,
      multi: true,
      allValue: '.*',
      current: {},
      hide: 0,
      options: [],
      sort: 1,
    },
    local row(title, y) = {
      type: 'row',
      title: title,
      collapsed: false,
      gridPos: { h: 1, w: 24, x: 0, y: y },
      panels: [],
    },
    // A panel: its grid place as [h, w, x, y], and its queries as
    // [expression, legend] pairs.
    local panel(type, title, description, grid, fieldConfig, queries, options={}) = {
      type: type,
      title: title,
      description: description,
      datasource: ds,
      gridPos: { h: grid[0], w: grid[1], x: grid[2], y: grid[3] },
      fieldConfig: fieldConfig,
      targets: [
        { refId: std.char(65 + i), expr: queries[i][0], legendFormat: queries[i][1], datasource: ds }
        for i in std.range(0, std.length(queries) - 1)
      ],
      options: options,
    },

    'llm-cache-exporter.json': {
      title: 'llm-cache-exporter',
      uid: 'llm-cache-exporter',
      description: 'SLOs, cache hit rate, latency, backends and topology, workload, memory pressure and the exporter itself, from llm-cache-exporter.',
      tags: ['llm', 'cache', 'redis', 'chroma'],
      schemaVersion: 39,
      version: 2,
      editable: true,
      graphTooltip: 1,
      time: { from: 'now-1h', to: 'now' },
      refresh: '30s',
      timezone: '',
      annotations: { list: [] },
      links: [],
      templating: {
        list: [
          {
            name: 'datasource',
            label: 'Data source',
            type: 'datasource',
            query: 'prometheus',
            current: {},
            hide: 0,
            refresh: 1,
            options: [],
          },
          variable('job', 'Job', 'label_values(llmcache_build_info{%s}, job)' % c.selector),
          variable('instance', 'Instance', 'label_values(llmcache_build_info{%s, job=~"$job"}, instance)' % c.selector),
        ],
      },
      panels: std.mapWithIndex(function(i, p) p { id: i + 1 }, [
        row('Overview', 0),
        panel(
          'stat',
          'Hit ratio by cache',
          'Share of lookups answered from the in-process cache over the last interval, all selected instances together. Red below 50 %, the LLMCacheLowHitRate line (chat_history and embeddings only: every memory write empties the similarity cache by design).',
          [5, 10, 0, 1],
          { defaults: { unit: 'percentunit', thresholds: { mode: 'absolute', steps: [{ color: 'red', value: null }, { color: 'green', value: 0.5 }] }, min: 0, max: 1 }, overrides: [] },
          [
            ['sum by (cache) (rate(llmcache_cache_hits_total{job=~"$job",instance=~"$instance"}[$__rate_interval])) / sum by (cache) (rate(llmcache_cache_requests_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))', '{{cache}}'],
          ],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'background', graphMode: 'none', textMode: 'value_and_name' }
        ),
        panel(
          'stat',
          'Backends',
          "Each backend's health probe, per instance: up when the last PING, heartbeat or embedding call succeeded. LLMCacheBackendDown pages after 1m down.",
          [5, 8, 10, 1],
          { defaults: { unit: 'none', mappings: [{ type: 'value', options: { '0': { text: 'down', color: 'red' }, '1': { text: 'up', color: 'green' } } }] }, overrides: [] },
          [
            ['llmcache_backend_up{job=~"$job",instance=~"$instance"}', '{{instance}} {{backend}}'],
          ],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'background', graphMode: 'none', textMode: 'value_and_name' }
        ),
        panel(
          'stat',
          'Memory pressure',
          "The memory monitor's overall verdict per instance: pressure in any scope (host, cgroup, PSI, Redis) shrinks the cache pool.",
          [5, 6, 18, 1],
          { defaults: { unit: 'none', mappings: [{ type: 'value', options: { '0': { text: 'ok', color: 'green' }, '1': { text: 'pressure', color: 'red' } } }] }, overrides: [] },
          [
            ['llmcache_memory_pressure{job=~"$job",instance=~"$instance",scope="overall"}', '{{instance}}'],
          ],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'background', graphMode: 'none', textMode: 'value_and_name' }
        ),
        row('SLO', 6),
        panel(
          'timeseries',
          'Error ratio by operation (%s)' % short,
          'Failed operations over all operations, per operation, from the llmcache:operation_error_ratio:rate%s recording rule. The line is the error budget of the %s objective (%s); the error-budget alerts fire when both a long and a short window burn it %s times too fast.'
          % [short, pct(c.slo.errors.objective), pct(errorBudget), std.join(', ', [lib.num(w.factor) for w in c.slo.windows])],
          [8, 8, 0, 7],
          { defaults: { unit: 'percentunit', thresholds: { mode: 'absolute', steps: [{ color: 'transparent', value: null }, { color: 'red', value: errorBudget }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['llmcache:operation_error_ratio:rate%s{job=~"$job",instance=~"$instance"}' % short, '{{instance}} {{operation}}'],
          ]
        ),
        panel(
          'timeseries',
          'Error budget left (%s)' % long,
          "1 − (error ratio over %s ÷ error budget), per operation: 100 %% is untouched, 0 %% spent, below 0 overspent. Reads llmcache:operation_error_ratio:rate%s and llmcache:slo_error_budget:ratio from the mixin's rules." % [long, long],
          [8, 8, 8, 7],
          { defaults: { unit: 'percentunit', thresholds: { mode: 'absolute', steps: [{ color: 'red', value: null }, { color: 'orange', value: 0 }, { color: 'green', value: 0.5 }] }, custom: { thresholdsStyle: { mode: 'line' } } }, overrides: [] },
          [
            ['1 - llmcache:operation_error_ratio:rate%s{job=~"$job",instance=~"$instance"} / on () group_left () llmcache:slo_error_budget:ratio' % long, '{{instance}} {{operation}}'],
          ]
        ),
        panel(
          'timeseries',
          'Error budget burn rate (%s)' % page.long,
          'How many times faster than the objective allows each operation spends its error budget over %s: 1 spends it exactly over the period; %s (the line) with the %s window agreeing fires the first burn-rate alert.'
          % [page.long, lib.num(page.factor), page.short],
          [8, 8, 16, 7],
          { defaults: { unit: 'none', thresholds: { mode: 'absolute', steps: [{ color: 'transparent', value: null }, { color: 'red', value: page.factor }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['llmcache:operation_error_ratio:rate%s{job=~"$job",instance=~"$instance"} / on () group_left () llmcache:slo_error_budget:ratio' % page.long, '{{instance}} {{operation}}'],
          ]
        ),
        panel(
          'timeseries',
          'Slow ratio by operation (%s)' % short,
          'Successful operations slower than the latency threshold (%s s) over all successful operations, from llmcache:operation_slow_ratio:rate%s. The line is the budget of the %s objective (%s).'
          % [lib.num(c.slo.latency.threshold), short, pct(c.slo.latency.objective), pct(slowBudget)],
          [8, 8, 0, 15],
          { defaults: { unit: 'percentunit', thresholds: { mode: 'absolute', steps: [{ color: 'transparent', value: null }, { color: 'red', value: slowBudget }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['llmcache:operation_slow_ratio:rate%s{job=~"$job",instance=~"$instance"}' % short, '{{instance}} {{operation}}'],
          ]
        ),
        panel(
          'timeseries',
          'Latency budget left (%s)' % long,
          '1 − (slow ratio over %s ÷ latency budget), per operation: 100 %% untouched, 0 %% spent.' % long,
          [8, 8, 8, 15],
          { defaults: { unit: 'percentunit', thresholds: { mode: 'absolute', steps: [{ color: 'red', value: null }, { color: 'orange', value: 0 }, { color: 'green', value: 0.5 }] }, custom: { thresholdsStyle: { mode: 'line' } } }, overrides: [] },
          [
            ['1 - llmcache:operation_slow_ratio:rate%s{job=~"$job",instance=~"$instance"} / on () group_left () llmcache:slo_latency_budget:ratio' % long, '{{instance}} {{operation}}'],
          ]
        ),
        panel(
          'timeseries',
          'Latency budget burn rate (%s)' % page.long,
          'How many times faster than the objective allows each operation spends its latency budget over %s; %s (the line) with the %s window agreeing fires the first burn-rate alert.'
          % [page.long, lib.num(page.factor), page.short],
          [8, 8, 16, 15],
          { defaults: { unit: 'none', thresholds: { mode: 'absolute', steps: [{ color: 'transparent', value: null }, { color: 'red', value: page.factor }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['llmcache:operation_slow_ratio:rate%s{job=~"$job",instance=~"$instance"} / on () group_left () llmcache:slo_latency_budget:ratio' % page.long, '{{instance}} {{operation}}'],
          ]
        ),
        row('Cache', 23),
        panel(
          'timeseries',
          'Hit ratio',
          'Share of lookups answered from memory, per cache, all selected instances together. The red area below 50 % is where LLMCacheLowHitRate fires (after 15m, while busier than 0.1 lookups/s).',
          [8, 8, 0, 24],
          { defaults: { unit: 'percentunit', min: 0, max: 1, thresholds: { mode: 'absolute', steps: [{ color: 'red', value: null }, { color: 'green', value: 0.5 }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['sum by (cache) (rate(llmcache_cache_hits_total{job=~"$job",instance=~"$instance"}[$__rate_interval])) / sum by (cache) (rate(llmcache_cache_requests_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))', '{{cache}}'],
          ]
        ),
        panel(
          'timeseries',
          'Lookups per second',
          'Cache lookups per second, per cache, all selected instances together.',
          [8, 8, 8, 24],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['sum by (cache) (rate(llmcache_cache_requests_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))', '{{cache}}'],
          ]
        ),
        panel(
          'timeseries',
          'Entries',
          'Entries each cache holds, per instance.',
          [8, 8, 16, 24],
          { defaults: { unit: 'short' }, overrides: [] },
          [
            ['llmcache_cache_entries{job=~"$job",instance=~"$instance"}', '{{instance}} {{cache}}'],
          ]
        ),
        panel(
          'timeseries',
          'Bytes held vs capacity',
          'What each cache holds against its share of the memory pool, per instance. Held near capacity means evictions by size.',
          [8, 8, 0, 32],
          { defaults: { unit: 'bytes' }, overrides: [] },
          [
            ['llmcache_cache_size_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} {{cache}} held'],
            ['llmcache_cache_capacity_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} {{cache}} capacity'],
          ]
        ),
        panel(
          'timeseries',
          'Evictions by cause',
          "Entries removed per second, by moka's cause: size (the cache is too small), expired (TTL), explicit (invalidated by a write), replaced.",
          [8, 8, 8, 32],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['sum by (cache, cause) (rate(llmcache_cache_evictions_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))', '{{cache}} {{cause}}'],
          ]
        ),
        panel(
          'timeseries',
          'Memory pool: budget vs used',
          "The caches' shared byte budget (it shrinks under memory pressure) and what they hold, per instance.",
          [8, 8, 16, 32],
          { defaults: { unit: 'bytes' }, overrides: [] },
          [
            ['llmcache_memory_pool_budget_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} budget'],
            ['llmcache_memory_pool_used_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} used'],
          ]
        ),
        row('Latency', 40),
        panel(
          'timeseries',
          'Operation latency p50 / p95 / p99 (from scheduled start)',
          "What a user of the backends waited, per operation, all selected instances together: measured from each operation's scheduled start (open loop), so a stall counts for everything queued behind it.",
          [8, 12, 0, 41],
          { defaults: { unit: 's' }, overrides: [] },
          [
            ['histogram_quantile(0.5, sum by (operation, le) (rate(llmcache_operation_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p50 {{operation}}'],
            ['histogram_quantile(0.95, sum by (operation, le) (rate(llmcache_operation_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p95 {{operation}}'],
            ['histogram_quantile(0.99, sum by (operation, le) (rate(llmcache_operation_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p99 {{operation}}'],
          ]
        ),
        panel(
          'timeseries',
          'Backend request latency p99',
          'What each backend took per request (PING, LRANGE, query, add, embed, …), failed requests included, all selected instances together.',
          [8, 12, 12, 41],
          { defaults: { unit: 's' }, overrides: [] },
          [
            ['histogram_quantile(0.99, sum by (backend, request, le) (rate(llmcache_backend_request_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', '{{backend}} {{request}}'],
          ]
        ),
        panel(
          'timeseries',
          'Operations per second by outcome',
          'Operations finished per second: cache_hit and cache_miss for reads, success for writes, error for any.',
          [8, 12, 0, 49],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['sum by (operation, outcome) (rate(llmcache_operation_duration_seconds_count{job=~"$job",instance=~"$instance"}[$__rate_interval]))', '{{operation}} {{outcome}}'],
          ]
        ),
        panel(
          'timeseries',
          'Errors per second by kind',
          "Zero while everything works; lines rise when operations fail (timeout, connection, protocol, server, validation, auth). The runbook's LLMCacheErrorBudgetBurn section maps kinds to causes.",
          [8, 12, 12, 49],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['sum by (operation, kind) (rate(llmcache_operation_errors_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))', '{{operation}} {{kind}}'],
          ]
        ),
        row('Topology', 57),
        panel(
          'timeseries',
          'Redis memory per node',
          'used_memory and maxmemory of every master, per instance (one node in standalone, each master in Cluster). maxmemory 0 means no limit.',
          [8, 8, 0, 58],
          { defaults: { unit: 'bytes' }, overrides: [] },
          [
            ['llmcache_redis_used_memory_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} {{node}} used'],
            ['llmcache_redis_maxmemory_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} {{node}} maxmemory'],
          ]
        ),
        panel(
          'timeseries',
          'Redis nodes by role',
          'Masters and replicas the exporter sees, per instance: a replica gone or a master missing shows here before a failover.',
          [8, 8, 8, 58],
          { defaults: { unit: 'short' }, overrides: [] },
          [
            ['llmcache_redis_nodes{job=~"$job",instance=~"$instance"}', '{{instance}} {{role}}'],
          ]
        ),
        panel(
          'timeseries',
          'Redis master changes',
          'Master changes in each interval, per instance: a Sentinel failover, or a master taking over cluster slots (a failover, a reshard step).',
          [8, 8, 16, 58],
          { defaults: { unit: 'short' }, overrides: [] },
          [
            ['increase(llmcache_redis_master_changes_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}}'],
          ]
        ),
        panel(
          'timeseries',
          'Redis error replies by code',
          'Requests Redis refused per second, by error code: OOM (maxmemory under noeviction), READONLY (a write to a replica), NOPERM/NOAUTH/WRONGPASS (ACLs), MOVED/ASK/TRYAGAIN/CLUSTERDOWN (cluster), LOADING, MASTERDOWN, BUSY.',
          [8, 8, 0, 66],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['sum by (code) (rate(llmcache_redis_error_replies_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))', '{{code}}'],
          ]
        ),
        panel(
          'timeseries',
          'Canary keys lost / keys evicted',
          "Chat histories the canary wrote and found gone before their TTL (evicted, or deleted by someone else), against all of Redis's evictions. Evictions alone are a full cache working; lost canary keys mean users' histories go too.",
          [8, 8, 8, 66],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['rate(llmcache_redis_lost_keys_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}} canary keys lost'],
            ['rate(llmcache_redis_evicted_keys_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}} evicted (all keys)'],
          ]
        ),
        panel(
          'timeseries',
          'Current outage',
          "How long each backend's current client-visible outage has lasted, from its first failed request; 0 when there is none.",
          [8, 8, 16, 66],
          { defaults: { unit: 's' }, overrides: [] },
          [
            ['llmcache_backend_outage_seconds{job=~"$job",instance=~"$instance"}', '{{instance}} {{backend}}'],
          ]
        ),
        panel(
          'timeseries',
          'Outage lengths p50 / max',
          'Only shows data after an outage has ended: the length of each ended outage (from the first failed request to the first success), median and longest in the interval, per backend.',
          [8, 8, 0, 74],
          { defaults: { unit: 's' }, overrides: [] },
          [
            ['histogram_quantile(0.5, sum by (backend, le) (rate(llmcache_backend_outage_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p50 {{backend}}'],
            ['histogram_quantile(1, sum by (backend, le) (rate(llmcache_backend_outage_duration_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'max {{backend}}'],
          ]
        ),
        panel(
          'timeseries',
          'Chroma probe collection records',
          "Records in the canary's own Chroma collection, per instance (the canary trims it to about 1,000).",
          [8, 8, 8, 74],
          { defaults: { unit: 'short' }, overrides: [] },
          [
            ['llmcache_chroma_collection_records{job=~"$job",instance=~"$instance"}', '{{instance}}'],
          ]
        ),
        panel(
          'timeseries',
          'Redis keyspace hits / misses',
          "Redis's own keyspace hits and misses per second (all clients, from INFO), per instance.",
          [8, 8, 16, 74],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['rate(llmcache_redis_keyspace_hits_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}} hits'],
            ['rate(llmcache_redis_keyspace_misses_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}} misses'],
          ]
        ),
        row('Vector quality', 82),
        panel(
          'timeseries',
          'Vector recall@k',
          "Mean recall@k of Chroma's answers against exact search over the canary's own records, per instance (workload.recall_check_fraction of its queries). Below 0.9 over 15m pages (LLMCacheVectorRecallLow): Chroma is up but answers wrong.",
          [8, 8, 0, 83],
          { defaults: { unit: 'percentunit', min: 0, max: 1, thresholds: { mode: 'absolute', steps: [{ color: 'red', value: null }, { color: 'green', value: 0.9 }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['rate(llmcache_vector_recall_ratio_sum{job=~"$job",instance=~"$instance"}[$__rate_interval]) / rate(llmcache_vector_recall_ratio_count{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}} recall'],
          ]
        ),
        panel(
          'timeseries',
          'Recall checks per second',
          "How many of Chroma's answers were checked against exact search, per instance: the alert needs 20 in its window.",
          [8, 8, 8, 83],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['rate(llmcache_vector_recall_checks_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}}'],
          ]
        ),
        panel(
          'timeseries',
          'Write visibility p50 / p99',
          "From a stored memory's add returning to the first query that returns it, all selected instances together: immediate on a single-node Chroma, the lag users feel on a distributed or managed one.",
          [8, 8, 16, 83],
          { defaults: { unit: 's' }, overrides: [] },
          [
            ['histogram_quantile(0.5, sum by (le) (rate(llmcache_vector_write_visibility_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p50'],
            ['histogram_quantile(0.99, sum by (le) (rate(llmcache_vector_write_visibility_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p99'],
          ]
        ),
        panel(
          'timeseries',
          'Invisible writes',
          'Stored memories that no query returned within workload.write_visibility_timeout, per second and instance.',
          [8, 8, 0, 91],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['rate(llmcache_vector_write_invisible_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}}'],
          ]
        ),
        panel(
          'timeseries',
          'Semantic hits / lookups',
          'Only shows data in semantic mode: the share of similarity lookups answered by a nearby cached query rather than the same one, all selected instances together.',
          [8, 8, 8, 91],
          { defaults: { unit: 'percentunit' }, overrides: [] },
          [
            ['sum(rate(llmcache_cache_semantic_hits_total{job=~"$job",instance=~"$instance"}[$__rate_interval])) / sum(rate(llmcache_cache_requests_total{job=~"$job",instance=~"$instance",cache="similarity"}[$__rate_interval]))', 'semantic hits'],
          ]
        ),
        panel(
          'timeseries',
          'Semantic verifications: different',
          "Only shows data in semantic mode: the share of verified semantic hits whose top-k ids differed from Chroma's own answer, all selected instances together. Above 5 % over 15m opens a ticket (LLMCacheSemanticCacheImprecise).",
          [8, 8, 16, 91],
          { defaults: { unit: 'percentunit', thresholds: { mode: 'absolute', steps: [{ color: 'transparent', value: null }, { color: 'orange', value: 0.05 }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['sum(rate(llmcache_cache_semantic_verifications_total{job=~"$job",instance=~"$instance",result="different"}[$__rate_interval])) / sum(rate(llmcache_cache_semantic_verifications_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))', 'different'],
          ]
        ),
        panel(
          'timeseries',
          'Nearest cached distance p50 / p90',
          'Only shows data in semantic mode: the cosine distance to the nearest cached query at each lookup the exact key missed, hits and misses alike; set distance_threshold against it.',
          [8, 8, 0, 99],
          { defaults: { unit: 'none' }, overrides: [] },
          [
            ['histogram_quantile(0.5, sum by (le) (rate(llmcache_cache_semantic_distance_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p50'],
            ['histogram_quantile(0.9, sum by (le) (rate(llmcache_cache_semantic_distance_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))', 'p90'],
          ]
        ),
        row('Workload', 107),
        panel(
          'timeseries',
          'Scheduled vs skipped',
          'Operations the open-loop schedule called for, those skipped because every workload.concurrency slot was busy, and the configured rate, per instance. Scheduled under the target means a stalled canary (LLMCacheCanaryStalled).',
          [8, 8, 0, 108],
          { defaults: { unit: 'ops' }, overrides: [] },
          [
            ['rate(llmcache_workload_scheduled_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}} scheduled'],
            ['rate(llmcache_workload_skipped_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}} skipped'],
            ['llmcache_workload_target_rate{job=~"$job",instance=~"$instance"}', '{{instance}} target'],
          ]
        ),
        panel(
          'timeseries',
          'Scheduler lag',
          'How late the scheduler started its latest tick, per instance; above 1 s for 5m fires LLMCacheWorkloadLagging.',
          [8, 8, 8, 108],
          { defaults: { unit: 's', thresholds: { mode: 'absolute', steps: [{ color: 'transparent', value: null }, { color: 'red', value: 1 }] }, custom: { thresholdsStyle: { mode: 'line+area' } } }, overrides: [] },
          [
            ['llmcache_workload_lag_seconds{job=~"$job",instance=~"$instance"}', '{{instance}}'],
          ]
        ),
        panel(
          'timeseries',
          'In flight',
          'Operations in flight, per instance; at workload.concurrency every new tick is skipped.',
          [8, 8, 16, 108],
          { defaults: { unit: 'short' }, overrides: [] },
          [
            ['llmcache_workload_inflight{job=~"$job",instance=~"$instance"}', '{{instance}}'],
          ]
        ),
        row('Memory', 116),
        panel(
          'timeseries',
          'Host memory',
          "The host's MemAvailable and MemTotal, per instance.",
          [8, 8, 0, 117],
          { defaults: { unit: 'bytes' }, overrides: [] },
          [
            ['llmcache_host_memory_available_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} available'],
            ['llmcache_host_memory_total_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} total'],
          ]
        ),
        panel(
          'timeseries',
          'cgroup usage vs limit',
          "Only shows data where the exporter's cgroup has a memory limit (a container with one): usage against the limit, per instance.",
          [8, 8, 8, 117],
          { defaults: { unit: 'bytes' }, overrides: [] },
          [
            ['llmcache_cgroup_memory_usage_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} usage'],
            ['llmcache_cgroup_memory_limit_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} limit'],
          ]
        ),
        panel(
          'timeseries',
          'Memory PSI (some / full)',
          'Only shows data where the kernel has pressure stall information (/proc/pressure/memory): the share of time some or all tasks stalled on memory, per window and instance.',
          [8, 8, 16, 117],
          { defaults: { unit: 'percentunit' }, overrides: [] },
          [
            ['llmcache_psi_memory_some_ratio{job=~"$job",instance=~"$instance"}', '{{instance}} some {{window}}'],
            ['llmcache_psi_memory_full_ratio{job=~"$job",instance=~"$instance"}', '{{instance}} full {{window}}'],
          ]
        ),
        panel(
          'timeseries',
          'Memory pressure by scope',
          "The memory monitor's verdict per scope and instance (1 = pressure): host, cgroup and PSI page through LLMCacheMemoryPressure, Redis through LLMCacheRedisNearMaxmemory.",
          [8, 8, 0, 125],
          { defaults: { unit: 'short' }, overrides: [] },
          [
            ['llmcache_memory_pressure{job=~"$job",instance=~"$instance"}', '{{instance}} {{scope}}'],
          ]
        ),
        row('Exporter', 133),
        panel(
          'stat',
          'Up',
          "Prometheus's last scrape of each instance: down for 5m pages (LLMCacheExporterDown).",
          [5, 6, 0, 134],
          { defaults: { unit: 'none', mappings: [{ type: 'value', options: { '0': { text: 'down', color: 'red' }, '1': { text: 'up', color: 'green' } } }] }, overrides: [] },
          [
            ['up{job=~"$job",instance=~"$instance"}', '{{instance}}'],
          ],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'background', graphMode: 'none', textMode: 'value_and_name' }
        ),
        panel(
          'stat',
          'Version',
          'The version each instance runs, from llmcache_build_info.',
          [5, 6, 6, 134],
          { defaults: { unit: 'none', mappings: [{ type: 'value', options: { '1': { text: 'running' } } }] }, overrides: [] },
          [
            ['llmcache_build_info{job=~"$job",instance=~"$instance"}', '{{instance}} {{version}} ({{revision}})'],
          ],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'none', graphMode: 'none', textMode: 'name' }
        ),
        panel(
          'stat',
          'Config reload',
          'Whether the last reload of the configuration (or of the web config or certificates) was applied; failed for 10m opens a ticket (LLMCacheConfigReloadFailed).',
          [5, 6, 12, 134],
          { defaults: { unit: 'none', mappings: [{ type: 'value', options: { '0': { text: 'refused', color: 'orange' }, '1': { text: 'applied', color: 'green' } } }] }, overrides: [] },
          [
            ['llmcache_config_last_reload_successful{job=~"$job",instance=~"$instance"}', '{{instance}}'],
          ],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'background', graphMode: 'none', textMode: 'value_and_name' }
        ),
        panel(
          'stat',
          'Restarts',
          "Times each instance's process started within the dashboard's time range.",
          [5, 6, 18, 134],
          { defaults: { unit: 'short', thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'orange', value: 1 }] } }, overrides: [] },
          [
            ['changes(process_start_time_seconds{job=~"$job",instance=~"$instance"}[$__range])', '{{instance}}'],
          ],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'background', graphMode: 'none', textMode: 'value_and_name' }
        ),
        panel(
          'timeseries',
          'CPU',
          'CPU seconds the exporter used per second, per instance.',
          [8, 8, 0, 139],
          { defaults: { unit: 'percentunit' }, overrides: [] },
          [
            ['rate(process_cpu_seconds_total{job=~"$job",instance=~"$instance"}[$__rate_interval])', '{{instance}}'],
          ]
        ),
        panel(
          'timeseries',
          'Resident memory',
          "The exporter's RSS, per instance, against its cache pool budget: the budget bounds the caches, not the whole process.",
          [8, 8, 8, 139],
          { defaults: { unit: 'bytes' }, overrides: [] },
          [
            ['process_resident_memory_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} rss'],
            ['llmcache_memory_pool_budget_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} cache budget'],
          ]
        ),
        panel(
          'timeseries',
          'Open file descriptors',
          'File descriptors the exporter holds against its limit, per instance.',
          [8, 8, 16, 139],
          { defaults: { unit: 'short' }, overrides: [] },
          [
            ['process_open_fds{job=~"$job",instance=~"$instance"}', '{{instance}} open'],
            ['process_max_fds{job=~"$job",instance=~"$instance"}', '{{instance}} max'],
          ]
        ),
        row('Application data', 147),
        panel(
          'timeseries',
          'Keys per group',
          "The census's count of the application's keys in Redis, per key group (other: keys no group matches).",
          [8, 8, 0, 148],
          { defaults: { unit: 'short' }, overrides: [] },
          [['llmcache_census_redis_keys{job=~"$job",instance=~"$instance"}', '{{instance}} {{group}}']],
        ),
        panel(
          'timeseries',
          'Memory per group',
          "MEMORY USAGE of each group's keys, summed (scaled up from the sampled share when census.redis.memory_sample is below 1).",
          [8, 8, 8, 148],
          { defaults: { unit: 'bytes' }, overrides: [] },
          [['llmcache_census_redis_memory_bytes{job=~"$job",instance=~"$instance"}', '{{instance}} {{group}}']],
        ),
        panel(
          'timeseries',
          'Keys without a TTL',
          'Keys of each group that never expire: in a group of chat histories, they grow memory until something deletes them.',
          [8, 8, 16, 148],
          { defaults: { unit: 'short' }, overrides: [] },
          [['llmcache_census_redis_keys_without_ttl{job=~"$job",instance=~"$instance"}', '{{instance}} {{group}}']],
        ),
        panel(
          'timeseries',
          'Longest keys (p99 and max length)',
          'Only shows data once the census has seen keys with elements. The 99th percentile and the largest element count of each group (LLEN for lists): a runaway history shows as the max far above p99.',
          [8, 8, 0, 156],
          { defaults: { unit: 'short' }, overrides: [] },
          [['llmcache_census_redis_length{job=~"$job",instance=~"$instance",quantile=~"0.99|1"}', '{{instance}} {{group}} q{{quantile}}']],
        ),
        panel(
          'timeseries',
          'Records per collection',
          "Chroma's records in each of the largest collections (and the canary's own), the rest summed as other.",
          [8, 8, 8, 156],
          { defaults: { unit: 'short' }, overrides: [] },
          [['llmcache_census_chroma_records{job=~"$job",instance=~"$instance"}', '{{instance}} {{collection}}']],
        ),
        panel(
          'timeseries',
          'Census passes',
          'How long the last pass of each store took, and how long ago the last successful one ended.',
          [8, 8, 16, 156],
          { defaults: { unit: 's' }, overrides: [] },
          [
            ['llmcache_census_pass_duration_seconds{job=~"$job",instance=~"$instance"}', '{{instance}} {{store}} pass'],
            ['time() - llmcache_census_last_success_timestamp_seconds{job=~"$job",instance=~"$instance"}', '{{instance}} {{store}} since success'],
          ],
        ),
      ]),
    },

    // The fleet: every /probe target, by job (one per module).
    local pj = 'job=~"$job"',
    local timeseries(title, description, grid, unit, queries) =
      panel('timeseries', title, description, grid, { defaults: { unit: unit }, overrides: [] }, queries),
    'llm-cache-exporter-fleet.json': {
      title: 'llm-cache-exporter fleet',
      uid: 'llm-cache-exporter-fleet',
      description: 'Every target /probe checks: Redis nodes, Chroma servers and LLM backends, by probe job.',
      tags: ['llm', 'cache', 'redis', 'chroma', 'fleet'],
      schemaVersion: 39,
      version: 1,
      editable: true,
      graphTooltip: 1,
      time: { from: 'now-1h', to: 'now' },
      refresh: '30s',
      timezone: '',
      annotations: { list: [] },
      links: [],
      templating: {
        list: [
          {
            name: 'datasource',
            label: 'Data source',
            type: 'datasource',
            query: 'prometheus',
            current: {},
            hide: 0,
            refresh: 1,
            options: [],
          },
          variable('job', 'Probe job', 'label_values(probe_success{%s}, job)' % c.probeSelector),
        ],
      },
      panels: std.mapWithIndex(function(i, p) p { id: i + 1 }, [
        row('Targets', 0),
        panel(
          'stat',
          'Targets failing',
          'Targets whose last probe failed (probe_success 0), of all the jobs shown.',
          [4, 6, 0, 1],
          { defaults: { unit: 'short', thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }] } }, overrides: [] },
          [['sum(1 - probe_success{%s})' % pj, 'failing']],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'background', graphMode: 'none', textMode: 'value' },
        ),
        panel(
          'stat',
          'Targets',
          'Targets probed, by job.',
          [4, 6, 6, 1],
          { defaults: { unit: 'short' }, overrides: [] },
          [['count by (job) (probe_success{%s})' % pj, '{{job}}']],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'none', graphMode: 'none', textMode: 'value_and_name' },
        ),
        panel(
          'stat',
          'Probes per second, by result',
          "The exporter's own count of /probe requests: success, failure, and those it refused (403), turned away (503) or could not read (400).",
          [4, 12, 12, 1],
          { defaults: { unit: 'reqps' }, overrides: [] },
          [['sum by (result) (rate(llmcache_probes_total{%s}[$__rate_interval]))' % c.selector, '{{result}}']],
          { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'none', graphMode: 'area', textMode: 'value_and_name' },
        ),
        panel(
          'table',
          'Targets: success, probe duration, Redis memory, application hit ratio',
          'One row per target: whether its last probe succeeded, how long the probe took, the Redis used memory its INFO reported (largest master), and the application cache hit ratio its /health reported. Empty cells: that target is of another kind.',
          [12, 24, 0, 5],
          { defaults: { unit: 'none' }, overrides: [] },
          [
            ['probe_success{%s}' % pj, '{{instance}}'],
            ['probe_duration_seconds{%s}' % pj, '{{instance}}'],
            ['max by (job, instance) (llmcache_redis_used_memory_bytes{%s})' % pj, '{{instance}}'],
            ['llmcache_app_cache_hit_ratio{%s}' % pj, '{{instance}}'],
          ],
          { showHeader: true },
        ) + {
          targets: [t { instant: true, format: 'table' } for t in super.targets],
          transformations: [{ id: 'merge', options: {} }],
        },
        row('Over time', 17),
        timeseries('Probe success', "Each target's probe_success over time: 1 passed, 0 failed.", [8, 12, 0, 18], 'none', [['probe_success{%s}' % pj, '{{instance}}']]),
        timeseries('Probe duration', "How long each target's probe took, against its scrape timeout less 0.5 s.", [8, 12, 12, 18], 's', [['probe_duration_seconds{%s}' % pj, '{{instance}}']]),
        timeseries(
          'Redis request latency (probe means)',
          "The mean of each probe's requests of each kind, per Redis target.",
          [8, 12, 0, 26],
          's',
          [['llmcache_probe_request_duration_seconds{%s, request=~"store_entry|lrange"}' % pj, '{{instance}} {{request}}']],
        ),
        timeseries(
          'Redis memory per target',
          "used_memory against maxmemory (0: no limit), per master, from each probe's INFO.",
          [8, 12, 12, 26],
          'bytes',
          [
            ['max by (job, instance) (llmcache_redis_used_memory_bytes{%s})' % pj, '{{instance}} used'],
            ['max by (job, instance) (llmcache_redis_maxmemory_bytes{%s})' % pj, '{{instance}} max'],
          ],
        ),
        timeseries(
          'Application cache hit ratio',
          "Each application's own cache hit ratio over the interval, from its hit and miss counters (the same ratio LLMCacheAppHitRateLow reads).",
          [8, 12, 0, 34],
          'percentunit',
          [[
            'sum by (job, instance) (rate(llmcache_app_cache_hits_total{%(s)s}[$__rate_interval])) / (sum by (job, instance) (rate(llmcache_app_cache_hits_total{%(s)s}[$__rate_interval])) + sum by (job, instance) (rate(llmcache_app_cache_misses_total{%(s)s}[$__rate_interval])))' % { s: pj },
            '{{instance}}',
          ]],
        ),
        timeseries(
          'Application status and memory pressure',
          "Each application's reported status (1 for the current one) and memory pressure.",
          [8, 12, 12, 34],
          'none',
          [
            ['llmcache_app_status{%s} == 1' % pj, '{{instance}} {{status}}'],
            ['llmcache_app_memory_pressure{%s}' % pj, '{{instance}} memory pressure'],
          ],
        ),
        timeseries(
          'Chroma recall@k and write visibility',
          "Each Chroma probe's recall@k of its fixed seed set against exact search, and how long its write took to show in a query.",
          [8, 24, 0, 42],
          'none',
          [
            ['llmcache_vector_recall_ratio{%s}' % pj, '{{instance}} recall'],
            ['llmcache_vector_write_visibility_seconds{%s}' % pj, '{{instance}} visibility (s)'],
          ],
        ),
        row('Application data (modules with a census)', 50),
        timeseries(
          'Keys per group, per target',
          "Each Redis target's census: its keys per group (other: keys no group matches), from the last complete pass.",
          [8, 8, 0, 51],
          'short',
          [['llmcache_census_redis_keys{%s}' % pj, '{{instance}} {{group}}']],
        ),
        timeseries(
          'Memory per group, per target',
          "MEMORY USAGE of each group's keys on each target, summed.",
          [8, 8, 8, 51],
          'bytes',
          [['llmcache_census_redis_memory_bytes{%s}' % pj, '{{instance}} {{group}}']],
        ),
        timeseries(
          'Keys without a TTL, per target',
          'Keys of each group that never expire, per target.',
          [8, 8, 16, 51],
          'short',
          [['llmcache_census_redis_keys_without_ttl{%s}' % pj, '{{instance}} {{group}}']],
        ),
        timeseries(
          'Longest key per group, per target',
          'The largest element count of each group on each target (LLEN for lists).',
          [8, 8, 0, 59],
          'short',
          [['llmcache_census_redis_length{%s, quantile="1"}' % pj, '{{instance}} {{group}}']],
        ),
        timeseries(
          'Records per collection, per target',
          "Each Chroma target's records in its largest collections (and the probe's own), the rest as other.",
          [8, 8, 8, 59],
          'short',
          [['llmcache_census_chroma_records{%s}' % pj, '{{instance}} {{collection}}']],
        ),
        timeseries(
          'Since the last complete census',
          "How long ago each target's last successful census pass ended: a probe returns that pass, however old.",
          [8, 8, 16, 59],
          's',
          [['time() - llmcache_census_last_success_timestamp_seconds{%s}' % pj, '{{instance}} {{store}}']],
        ),
      ]),
    },
  },
}
