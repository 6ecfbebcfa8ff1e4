# Shared by setup.sh, provision-brokers.sh, build-plugin.sh and in-root.sh:
# where each supported RabbitMQ series comes from on this machine.
#
#   series  Debian suite that packages it
#   3.10    bookworm (Debian 12)
#   4.0     trixie   (Debian 13)
#   4.3     testing  (a moving target: whatever it serves must be a 4.3.x)
#
# A series the host's own rabbitmq-server package provides runs natively;
# any other runs inside a Debian root built by provision-brokers.sh and cached
# under $WARREN_ROOTS (default /var/cache/warren/roots/<suite>). A root is
# complete once its marker file (written last) exists; it holds the facts the
# launcher needs, one key=value per line: series, rabbitmq, erlang, suite.

WARREN_SERIES=(3.10 4.0 4.3)
WARREN_ROOTS="${WARREN_ROOTS:-/var/cache/warren/roots}"
WARREN_ROOT_MARKER=.warren-root

series_suite() {
  case "$1" in
    3.10) echo bookworm ;;
    4.0) echo trixie ;;
    4.3) echo testing ;;
    *) return 1 ;;
  esac
}

# The series of a RabbitMQ version string (4.0.5-2 -> 4.0).
version_series() {
  local v="${1%%-*}"
  local major="${v%%.*}" rest="${v#*.}"
  echo "$major.${rest%%.*}"
}

# The host's packaged RabbitMQ version, or nothing.
host_rabbitmq_version() {
  dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null | sed 's/-.*//' || true
}

root_dir() { echo "$WARREN_ROOTS/$(series_suite "$1")"; }

# Reads key from a complete root's marker; fails if the root is incomplete.
root_fact() {
  local marker
  marker="$(root_dir "$1")/$WARREN_ROOT_MARKER"
  [ -f "$marker" ] || return 1
  sed -n "s/^$2=//p" "$marker"
}

# The package archive the host's apt uses (deb822 or one-line sources), never
# a security or updates archive: read at run time, not written in the repo.
host_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f" | grep -v -- '-security' | grep -i debian | head -n1)
    [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f" | grep -v -- '-security' | grep -i debian | head -n1)
    [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
  done
  return 1
}

# 0 if this machine provides the series (host package or complete root).
series_provided() {
  local hv
  hv="$(host_rabbitmq_version)"
  { [ -n "$hv" ] && [ "$(version_series "$hv")" = "$1" ]; } || root_fact "$1" rabbitmq >/dev/null
}
