#!/usr/bin/env bash
# Installs what Warren needs on a Debian 12 machine with Node 20 (as root), then
# builds it: npm packages, RabbitMQ 3.10.8 with Erlang and erlc from Debian's
# packages, the TypeScript sidecar and the Erlang plugin. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1mwarren setup:\033[0m %s\n' "$*"; }

need_apt=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v erlc >/dev/null 2>&1 || need_apt+=(erlang-base)
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
version=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || true)
case "$version" in
  3.10.8*) ;;
  *) echo "warren setup: RabbitMQ 3.10.8 is required, found '${version:-none}'" >&2; exit 1 ;;
esac

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund
fi

bash scripts/build.sh
