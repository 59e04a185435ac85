// The llm-cache-exporter monitoring mixin: `prometheusRules` and
// `prometheusAlerts`, configured by `_config` (see config.libsonnet).
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
