#!/usr/bin/env bash
# Builds the TypeScript (dist/) and the Erlang plugin for every RabbitMQ
# series this machine provides (build/rabbitmq-<series>/plugins/).
set -euo pipefail
umask 022  # the broker may run as another user (Debian's rabbitmq): the build must be readable by it
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json
npx tsc -p examples/tsconfig.json
chmod +x dist/sidecar/main.js dist/cli/main.js 2>/dev/null || true
. scripts/lib/brokers.sh
for series in "${WARREN_SERIES[@]}"; do
  if series_provided "$series"; then bash scripts/build-plugin.sh "$series"; fi
done
