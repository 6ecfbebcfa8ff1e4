#!/usr/bin/env bash
# Installs what Warren needs on a Debian 12 or 13 machine with Node 20 (as
# root), then builds it: npm packages, the host's packaged RabbitMQ (3.10.8 on
# Debian 12, 4.0.5 on Debian 13) with Erlang and erlc, every other supported
# RabbitMQ series in a cached Debian root (scripts/provision-brokers.sh), the
# TypeScript sidecar and the Erlang plugin for each broker. Safe to run again:
# what is there is reused.
#
#   WARREN_SETUP_SERIES="4.0"   provide only these series (default: 3.10 4.0 4.3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/brokers.sh

log() { printf '\033[1mwarren setup:\033[0m %s\n' "$*"; }

need_apt=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v erlc >/dev/null 2>&1 || need_apt+=(erlang-base)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
# better-sqlite3 (bench only) is built from source by npm ci (.npmrc)
for tool in g++ make python3; do command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool"); done
# nft: the cluster's partitions (src/cli/partition.ts)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
# the management UI's browser test (playwright-core drives Debian's chromium; it never downloads one)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-liberation)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "warren setup: ${need_apt[*]} missing and not root: install them with apt-get first" >&2
    exit 1
  fi
  log "installing ${need_apt[*]} from Debian's packages"
  apt-get update -q
  # policy-rc.d or not, never leave the system-wide node running: Warren runs its own.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
version="$(host_rabbitmq_version)"
series="$(version_series "${version:-0.0}")"
if ! series_suite "$series" >/dev/null; then
  log "the host's rabbitmq-server is '${version:-none}', not a supported series (${WARREN_SERIES[*]}); the supported ones come from Debian roots"
fi

read -r -a wanted <<<"${WARREN_SETUP_SERIES:-${WARREN_SERIES[*]}}"
bash scripts/provision-brokers.sh "${wanted[@]}"

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi

bash scripts/build.sh
