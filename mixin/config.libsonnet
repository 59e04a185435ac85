// What a user of the mixin sets. Override any field from your own jsonnet:
//
//   (import 'llm-cache-exporter-mixin/mixin.libsonnet') + {
//     _config+:: { selector: 'job="canary"' },
//   }
//
// or, with this repository's build script, as a top-level argument:
//
//   scripts/mixin.sh --config '{ selector: "job=\"canary\"" }'
{
  _config+:: {
    // Selects the exporter's series in every rule. A renamed scrape job is
    // this one line.
    selector: 'job="llm-cache-exporter"',

    // Where each alert's runbook lives; %s is the alert's name in lower case.
    runbookUrl: 'https://github.com/llm-cache-exporter/llm-cache-exporter/blob/main/docs/runbook.md#%s',

    // The rule groups' evaluation interval; null keeps Prometheus's global one.
    interval: null,

    // Service level objectives over the canary's operations, alerted on as
    // multi-window, multi-burn-rate alerts (Google SRE workbook, ch. 5).
    slo: {
      // The share of operations that succeed.
      errors: { objective: 0.995 },
      // The share of successful operations faster than `threshold` seconds.
      // The threshold must be one of `latencyBuckets`.
      latency: { objective: 0.99, threshold: 0.25 },
      // An alert fires when both windows burn budget `factor` times faster
      // than the objective allows. The first two page, the last two open a
      // ticket.
      windows: [
        { severity: 'critical', long: '1h', short: '5m', factor: 14.4, 'for': '2m' },
        { severity: 'critical', long: '6h', short: '30m', factor: 6, 'for': '15m' },
        { severity: 'warning', long: '1d', short: '2h', factor: 3, 'for': '1h' },
        { severity: 'warning', long: '3d', short: '6h', factor: 1, 'for': '3h' },
      ],
    },

    // The daemon's latency histogram bounds, as its /metrics prints them.
    latencyBuckets: [
      0.0001, 0.00025, 0.0005,
      0.001, 0.0025, 0.005,
      0.01, 0.025, 0.05,
      0.1, 0.25, 0.5,
      1, 2.5, 5,
      10,
    ],

    // The caches whose hit ratio pages (the similarity cache empties on
    // every memory write, by design), below `threshold` while busier than
    // `minRate` lookups per second.
    hitRate: { caches: ['chat_history', 'embeddings'], threshold: 0.5, minRate: 0.1, 'for': '15m' },

    // Up, with a schedule that calls for operations, and none scheduled
    // over `window`.
    canaryStalled: { window: '5m', 'for': '1m' },

    // Down now, or down more than `flapShare` of `flapWindow`: a flapping
    // backend keeps the alert pending instead of restarting its `for`.
    backendDown: { 'for': '1m', flapWindow: '5m', flapShare: 0.5 },

    // The daemon's own host; Redis memory is LLMCacheRedisNearMaxmemory's.
    memoryPressure: { scopes: ['host', 'cgroup', 'psi'], 'for': '5m' },

    // Redis above `ratio` of maxmemory and, over `window`, refusing writes
    // with OOM or evicting the canary's own keys.
    redisMaxmemory: { ratio: 0.9, window: '5m', 'for': '2m' },

    // A master under maxmemory-policy noeviction above `ratio` of maxmemory
    // for `for`: it will refuse writes when full, so warn before it does.
    // (An evicting policy sits at maxmemory by design: no warning.)
    redisNoEviction: { ratio: 0.9, 'for': '10m' },

    // Mean recall@k of the vector store below `min` over `window`, judged
    // on at least `minChecks` checks.
    vectorRecall: { min: 0.9, window: '15m', minChecks: 20, 'for': '5m' },

    // More than `maxDifferent` of verified semantic hits served other ids
    // than the backend would have, over at least `minVerifications`.
    semanticPrecision: { maxDifferent: 0.05, window: '15m', minVerifications: 20, 'for': '15m' },

    workloadLagging: { skippedRatio: 0.05, lagSeconds: 1, 'for': '5m' },
    exporterDown: { 'for': '5m' },
    configReloadFailed: { 'for': '10m' },

    // Fleets: the /probe jobs (deploy/prometheus/probe.yml names them
    // llmcache-probe-<module>), whatever else they scrape.
    probeSelector: 'job=~"llmcache-probe-.*"',
    probeFailing: { 'for': '2m' },
    // An application's own cache hit ratio, from its counters, below
    // `threshold` over `window` while busier than `minRate` lookups/s.
    appHitRate: { threshold: 0.5, window: '15m', minRate: 0.1, 'for': '15m' },
    appMemoryPressure: { 'for': '10m' },
    appUnhealthy: { 'for': '5m' },

    // The census of the application's data (see [census] in the exporter).
    census: {
      // Key groups whose keys must all carry a TTL (the group label).
      ttlRequiredGroups: ['chat'],
      // The longest list (or other value) a group may hold.
      maxListLength: 1000,
      // Records a collection may grow to; the alert fires when it will
      // cross it within `growthHorizon` at the rate of `growthWindow`.
      maxCollectionRecords: 10000000,
      growthWindow: '6h',
      growthHorizon: '7d',
      // The exporter's census.interval: stale after three without success.
      interval: '5m',
      'for': '30m',
    },
  },
}
