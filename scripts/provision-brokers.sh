#!/usr/bin/env bash
# Provides every supported RabbitMQ series on this machine (scripts/lib/brokers.sh):
# the host's own package natively, every other series inside a Debian root
# built once with debootstrap from the host's own package archive and cached
# under $WARREN_ROOTS. A root whose marker is missing (an interrupted build)
# is built again from scratch. Prints one line per series saying what it got.
#
#   provision-brokers.sh [SERIES...]     default: all of 3.10 4.0 4.3
#
# Exit status 0 even when a series cannot be provided (the archive does not
# serve its suite, or serves another version): the summary says so, and test
# runs report that series as not run. Fails on a broken build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/brokers.sh

log() { printf '\033[1mwarren brokers:\033[0m %s\n' "$*"; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=("${WARREN_SERIES[@]}")
host_version="$(host_rabbitmq_version)"
host_series=""
[ -n "$host_version" ] && host_series="$(version_series "$host_version")"

mirror=""
ensure_tools() {
  [ "$(id -u)" = 0 ] || { echo "warren brokers: building a Debian root needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  }
  [ -n "$mirror" ] || mirror="$(host_mirror)" || { echo "warren brokers: no Debian archive found in the host's apt sources" >&2; exit 1; }
}

# 0 if the archive serves dists/<suite>/Release.
suite_served() {
  node -e '
    fetch(process.argv[1], { method: "HEAD" }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1));
  ' "$mirror/dists/$1/Release"
}

build_root() {
  local series="$1" suite dir t0 t version erlang apt_opts=()
  suite="$(series_suite "$series")"
  dir="$(root_dir "$series")"
  ensure_tools
  if ! suite_served "$suite"; then
    log "RabbitMQ $series: the archive $mirror does not serve Debian '$suite'; RabbitMQ $series is not provided (its test runs are reported as not run)"
    return 0
  fi
  # testing's Release file may have expired (a frozen snapshot): apt inside must not refuse it.
  [ "$suite" = testing ] && apt_opts=(-o Acquire::Check-Valid-Until=false)
  rm -rf "$dir"
  mkdir -p "$dir"
  t0=$(date +%s)
  log "RabbitMQ $series: building a Debian '$suite' root in $dir (debootstrap from $mirror, about a minute) ..."
  t=$(date +%s)
  if ! debootstrap --variant=minbase --arch=amd64 "$suite" "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1; then
    tail -n 20 "$dir.debootstrap.log" >&2
    echo "warren brokers: debootstrap of '$suite' failed (log: $dir.debootstrap.log)" >&2
    exit 1
  fi
  log "RabbitMQ $series: base system ready ($(elapsed "$t"), $(du -sh "$dir" | cut -f1))"
  # No service may start inside the root; epmd needs a localhost entry.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  grep -qs '^127.0.0.1' "$dir/etc/hosts" || printf '127.0.0.1 localhost\n::1 localhost\n' >>"$dir/etc/hosts"
  t=$(date +%s)
  log "RabbitMQ $series: installing rabbitmq-server from '$suite' ..."
  if ! unshare --mount --propagation private -- /bin/sh -c '
        set -e
        mount -t proc proc "$1/proc"
        shift
        root="$1"; shift
        chroot "$root" apt-get "$@" update -q
        chroot "$root" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get "$@" install -y -q --no-install-recommends rabbitmq-server libstdc++6
        chroot "$root" apt-get clean
      ' sh "$dir" "$dir" "${apt_opts[@]}" >"$dir.apt.log" 2>&1; then
    tail -n 20 "$dir.apt.log" >&2
    echo "warren brokers: installing rabbitmq-server in the '$suite' root failed (log: $dir.apt.log)" >&2
    exit 1
  fi
  version="$(chroot "$dir" dpkg-query -W -f='${Version}' rabbitmq-server | sed 's/-.*//')"
  erlang="$(cat "$dir"/usr/lib/erlang/releases/*/OTP_VERSION | head -n1)"
  log "RabbitMQ $series: rabbitmq-server $version with Erlang $erlang installed ($(elapsed "$t"))"
  if [ "$(version_series "$version")" != "$series" ]; then
    log "RabbitMQ $series: Debian '$suite' now packages RabbitMQ $version, not a $series release; RabbitMQ $series is not provided (its test runs are reported as not run)"
    return 0
  fi
  # The sidecar runs the host's node inside the root: a mount target for it.
  node_bin="$(readlink -f "$(command -v node)")"
  mkdir -p "$dir$(dirname "$node_bin")"
  [ -e "$dir$node_bin" ] || touch "$dir$node_bin"
  printf 'series=%s\nrabbitmq=%s\nerlang=%s\nsuite=%s\nbuilt=%s\n' "$series" "$version" "$erlang" "$suite" "$(date -u +%FT%TZ)" >"$dir/$WARREN_ROOT_MARKER.tmp"
  mv "$dir/$WARREN_ROOT_MARKER.tmp" "$dir/$WARREN_ROOT_MARKER"
  rm -f "$dir.debootstrap.log" "$dir.apt.log"
  log "RabbitMQ $series: root ready in $(elapsed "$t0") ($(du -sh "$dir" | cut -f1))"
}

for series in "${wanted[@]}"; do
  series_suite "$series" >/dev/null || { echo "warren brokers: unknown RabbitMQ series '$series' (supported: ${WARREN_SERIES[*]})" >&2; exit 2; }
  if [ "$series" = "$host_series" ]; then
    continue
  fi
  if [ -f "$(root_dir "$series")/$WARREN_ROOT_MARKER" ]; then
    continue
  fi
  build_root "$series"
done

for series in "${wanted[@]}"; do
  if [ "$series" = "$host_series" ]; then
    log "RabbitMQ $series: $host_version from the host's packages"
  elif v="$(root_fact "$series" rabbitmq)"; then
    log "RabbitMQ $series: $v (Erlang $(root_fact "$series" erlang)) in $(root_dir "$series")"
  else
    log "RabbitMQ $series: not provided"
  fi
done
