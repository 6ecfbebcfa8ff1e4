#!/usr/bin/env bash
# Runs a command inside the Debian root of a RabbitMQ series
# (scripts/provision-brokers.sh), in a mount namespace of its own: whatever
# is mounted for it vanishes when its last process exits, a kill -9 included.
#
#   in-root.sh SERIES [--user UID:GID] [--cwd DIR] [--bind DIR]... -- CMD [ARG...]
#
# Inside, the paths that matter are the host's own: /dev, /sys, a fresh /proc,
# /tmp, this checkout and every --bind DIR are mounted at the same absolute
# path, and the host's node binary at its own path (the sidecar runs it). The
# environment passes through unchanged; the command runs as UID:GID if given.
set -euo pipefail
ROOT_OF_REPO="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT_OF_REPO/scripts/lib/brokers.sh"

args=("$@")
series="${1:?usage: in-root.sh SERIES [--user UID:GID] [--cwd DIR] [--bind DIR]... -- CMD [ARG...]}"
shift
dir="$(root_dir "$series")" || { echo "in-root: unknown RabbitMQ series '$series'" >&2; exit 2; }
[ -f "$dir/$WARREN_ROOT_MARKER" ] || { echo "in-root: no complete root for RabbitMQ $series at $dir (run npm run setup)" >&2; exit 1; }

user="" cwd="/" binds=("$ROOT_OF_REPO")
while [ $# -gt 0 ]; do
  case "$1" in
    --user) user="$2"; shift 2 ;;
    --cwd) cwd="$2"; shift 2 ;;
    --bind) binds+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "in-root: unexpected argument '$1'" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "in-root: no command" >&2; exit 2; }

if [ "${WARREN_IN_ROOT_NS:-}" != "$$" ]; then
  # Re-run this script in a new mount namespace (same pid: unshare execs).
  export WARREN_IN_ROOT_NS=$$
  exec unshare --mount --propagation private -- "$0" "${args[@]}"
fi
unset WARREN_IN_ROOT_NS

mount --rbind /dev "$dir/dev"
mount --rbind /sys "$dir/sys"
mount -t proc proc "$dir/proc"
mount --rbind /tmp "$dir/tmp"
for b in "${binds[@]}"; do
  b="$(readlink -f "$b")"
  case "$b" in /tmp | /tmp/*) continue ;; esac
  mkdir -p "$dir$b"
  mount --rbind "$b" "$dir$b"
done
node_bin="$(readlink -f "$(command -v node)")"
[ -e "$dir$node_bin" ] || { mkdir -p "$dir$(dirname "$node_bin")"; touch "$dir$node_bin"; }
mount --bind "$node_bin" "$dir$node_bin"

exec chroot ${user:+--userspec="$user"} "$dir" /bin/sh -c 'cd "$1" && shift && exec "$@"' in-root "$cwd" "$@"
