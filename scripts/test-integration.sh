#!/usr/bin/env bash
# Runs the whole integration suite once against each RabbitMQ series this
# machine provides (one broker per series per run), then prints one line per
# series: passed, FAILED, or not run (not provided here: never counted as
# passed). Fails if any run failed.
#
#   test-integration.sh [SERIES...]     default: $WARREN_TEST_SERIES, else 3.10 4.0 4.3
#   extra jest arguments: WARREN_JEST_ARGS (e.g. "-t crash")
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/brokers.sh

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || read -r -a wanted <<<"${WARREN_TEST_SERIES:-${WARREN_SERIES[*]}}"
read -r -a jest_args <<<"${WARREN_JEST_ARGS:-}"
summary=()
failed=0
for series in "${wanted[@]}"; do
  if ! series_provided "$series"; then
    summary+=("RabbitMQ $series: not run (not provided on this machine; see the setup output)")
    continue
  fi
  hv="$(host_rabbitmq_version)"
  if [ -n "$hv" ] && [ "$(version_series "$hv")" = "$series" ]; then v="$hv"; else v="$(root_fact "$series" rabbitmq)"; fi
  printf '\n\033[1m=== integration suite on RabbitMQ %s (%s) ===\033[0m\n' "$v" "$series"
  t0=$(date +%s)
  if WARREN_RABBITMQ="$series" npx jest --config jest.integration.config.js --runInBand "${jest_args[@]}"; then
    summary+=("RabbitMQ $v: passed ($(( $(date +%s) - t0 )) s)")
  else
    summary+=("RabbitMQ $v: FAILED ($(( $(date +%s) - t0 )) s)")
    failed=1
  fi
done
printf '\n\033[1mintegration suites:\033[0m\n'
printf '  %s\n' "${summary[@]}"
exit $failed
