#!/usr/bin/env bash
# Renders the monitoring mixin (mixin/) with Debian's jsonnet into the files
# that ship: alerts/llm-cache-exporter.rules.yml,
# deploy/kubernetes/prometheusrule.yaml and the dashboards in dashboards/.
#   scripts/mixin.sh           regenerate them
#   scripts/mixin.sh --check   fail if the committed files differ from the mixin
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
apt_ensure jsonnet:jsonnet

render() {
  if [ "$1" = dashboard ] || [ "$1" = fleet-dashboard ]; then
    jsonnet -J mixin mixin/build.jsonnet --tla-str "format=$1"
  else
    jsonnet -S -J mixin mixin/build.jsonnet --tla-str "format=$1"
  fi
}

status=0
for pair in rules:alerts/llm-cache-exporter.rules.yml prometheusrule:deploy/kubernetes/prometheusrule.yaml \
  dashboard:dashboards/llm-cache-exporter.json fleet-dashboard:dashboards/llm-cache-exporter-fleet.json; do
  format="${pair%%:*}" file="${pair#*:}"
  if [ "${1:-}" = "--check" ]; then
    if ! diff -u "$file" <(render "$format"); then
      echo "$file is not what mixin/ generates: run scripts/mixin.sh and commit the result" >&2
      status=1
    fi
  else
    render "$format" >"$file"
    echo "wrote $file"
  fi
done
exit "$status"
