#!/usr/bin/env bash
# Builds the Erlang plugin rabbitmq_warren for one broker into
# build/rabbitmq-<series>/plugins/<name>-<version>/ebin, with that broker's own
# erlc, headers and beams:
#   build-plugin.sh [SERIES]    (default $WARREN_RABBITMQ, else the host's broker) Reads name, version and the
# sidecar entry from plugin.json; the .app gets the absolute paths of node and
# of the sidecar entry. Idempotent: only changed modules are recompiled (all
# of them after a change to a header of rabbitmq/include).
# Warnings are errors.
set -euo pipefail
# The broker may run as another user (Debian's rabbitmq): what we build must be readable by it.
umask 022
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

. "$ROOT/scripts/lib/brokers.sh"

# Which broker to build for: a series (3.10, 4.0, 4.3), built with that
# broker's own erlc and headers (natively, or inside its Debian root).
SERIES="${1:-${WARREN_RABBITMQ:-}}"
HOST_VERSION="$(host_rabbitmq_version)"
HOST_SERIES=""
[ -n "$HOST_VERSION" ] && HOST_SERIES="$(version_series "$HOST_VERSION")"
[ -n "$SERIES" ] || SERIES="$HOST_SERIES"
[ -n "$SERIES" ] || { echo "build-plugin: no RabbitMQ series given and none installed on the host" >&2; exit 1; }
series_suite "$SERIES" >/dev/null || { echo "build-plugin: unknown RabbitMQ series '$SERIES' (supported: ${WARREN_SERIES[*]})" >&2; exit 2; }
if [ "$SERIES" = "$HOST_SERIES" ]; then
  RMQ_VSN="$HOST_VERSION"
  in_broker() { "$@"; }
else
  RMQ_VSN="$(root_fact "$SERIES" rabbitmq)" || { echo "build-plugin: RabbitMQ $SERIES is not provided on this machine (run npm run setup)" >&2; exit 1; }
  in_broker() { "$ROOT/scripts/in-root.sh" "$SERIES" -- "$@"; }
fi
PLUGINS="/usr/lib/rabbitmq/lib/rabbitmq_server-$RMQ_VSN/plugins"
for d in "rabbit_common-$RMQ_VSN" "rabbit-$RMQ_VSN"; do
  if ! in_broker test -d "$PLUGINS/$d/include"; then
    echo "build-plugin: $PLUGINS/$d/include not found for RabbitMQ $SERIES ($RMQ_VSN)" >&2
    exit 1
  fi
done
in_broker sh -c 'command -v erlc' >/dev/null || { echo "build-plugin: erlc not found for RabbitMQ $SERIES" >&2; exit 1; }
NODE_BIN="$(command -v node || true)"
[ -n "$NODE_BIN" ] || { echo "build-plugin: node not found" >&2; exit 1; }
NODE_BIN="$(readlink -f "$NODE_BIN")"

# plugin.json: name version entry (one per line)
mapfile -t M < <(node -e '
  const m = require(process.argv[1]);
  console.log(m.name || "rabbitmq_warren");
  console.log(m.version || "0.2.0");
  console.log((m.sidecar && m.sidecar.entry) || "dist/sidecar/main.js");
' "$ROOT/plugin.json")
NAME="${M[0]}"; VSN="${M[1]}"; ENTRY="$ROOT/${M[2]}"

SRC="$ROOT/rabbitmq/src"
# The plugin's own headers (the protocol's wire constants). The checkout is
# mounted at its own path inside a broker's root (in-root.sh), so this
# absolute path holds for native and in-root builds alike.
INC="$ROOT/rabbitmq/include"
OUT="$ROOT/build/rabbitmq-$SERIES/plugins/$NAME-$VSN"
# A build of another version would be a second copy of the plugin on the broker's plugin path.
rm -rf "$ROOT/build/plugins"  # before per-broker builds, the one build lived here
for old in "$ROOT/build/rabbitmq-$SERIES/plugins/$NAME"-*; do
  [ -e "$old" ] && [ "$old" != "$OUT" ] && rm -rf "$old"
done
EBIN="$OUT/ebin"
mkdir -p "$EBIN"
# The settings' defaults and checks, from plugin.json (rabbit_warren_config
# includes them); written only when they change, so nothing recompiles needlessly.
GEN="$ROOT/build/rabbitmq-$SERIES/include"
mkdir -p "$GEN"
[ -f "$ROOT/dist/cli/main.js" ] || { echo "build-plugin: dist/ is not built (run npm run build)" >&2; exit 1; }
node "$ROOT/dist/cli/main.js" settings --format erlang >"$GEN/rabbit_warren_settings.hrl.new" ||
  { echo "build-plugin: plugin.json's settings are not valid (above)" >&2; rm -f "$GEN/rabbit_warren_settings.hrl.new"; exit 1; }
if cmp -s "$GEN/rabbit_warren_settings.hrl.new" "$GEN/rabbit_warren_settings.hrl"; then
  rm -f "$GEN/rabbit_warren_settings.hrl.new"
else
  mv "$GEN/rabbit_warren_settings.hrl.new" "$GEN/rabbit_warren_settings.hrl"
fi

ERLC_FLAGS=(
  -Werror +warn_export_vars +warn_shadow_vars +warn_obsolete_guard +debug_info
  -I "$INC" -I "$GEN"
  -I "$PLUGINS/rabbit_common-$RMQ_VSN/include" -I "$PLUGINS/rabbit-$RMQ_VSN/include"
  -pa "$PLUGINS/rabbit_common-$RMQ_VSN/ebin" -pa "$PLUGINS/rabbit-$RMQ_VSN/ebin"
  # rabbit_warren_mgmt: the management UI's extension behaviour and records (used only when it runs)
  -pa "$PLUGINS/rabbitmq_management-$RMQ_VSN/ebin" -pa "$PLUGINS/rabbitmq_management_agent-$RMQ_VSN/ebin"
  -pa "$PLUGINS/rabbitmq_web_dispatch-$RMQ_VSN/ebin"
  -o "$EBIN"
)

# A changed header recompiles every module (they are few).
newest_hrl=""
for hrl in "$INC"/*.hrl "$GEN"/*.hrl; do
  [ -e "$hrl" ] || continue
  if [ -z "$newest_hrl" ] || [ "$hrl" -nt "$newest_hrl" ]; then newest_hrl="$hrl"; fi
done
changed=()
modules=()
for src in "$SRC"/*.erl; do
  mod="$(basename "$src" .erl)"
  modules+=("$mod")
  beam="$EBIN/$mod.beam"
  if [ ! -f "$beam" ] || [ "$src" -nt "$beam" ] || [ "$0" -nt "$beam" ] ||
     { [ -n "$newest_hrl" ] && [ "$newest_hrl" -nt "$beam" ]; }; then
    changed+=("$src")
  fi
done
if [ ${#changed[@]} -gt 0 ]; then
  echo "build-plugin: RabbitMQ $RMQ_VSN: erlc ${changed[*]#$ROOT/}"
  # behaviours first (rabbit_backing_queue comes from the -pa ebins)
  in_broker erlc "${ERLC_FLAGS[@]}" "${changed[@]}"
fi
# drop beams of removed sources
for beam in "$EBIN"/*.beam; do
  [ -e "$beam" ] || continue
  mod="$(basename "$beam" .beam)"
  [ -f "$SRC/$mod.erl" ] || rm -f "$beam"
done

# priv/: the management UI's script (served by the management plugin from the app's priv/www).
rm -rf "$OUT/priv"
cp -r "$ROOT/rabbitmq/priv" "$OUT/priv"
chmod -R a+rX "$OUT/priv"

# The .app: the .app.src with the module list, version and the env paths.
APP="$EBIN/$NAME.app"
TMP="$(mktemp)"
trap 'rm -f "$TMP"' EXIT
mods_csv="$(IFS=,; echo "${modules[*]}")"
in_broker erl -noshell -eval '
  [Src, Out, Mods, Vsn, Node, Entry] = init:get_plain_arguments(),
  {ok, [{application, Name, Props0}]} = file:consult(Src),
  ModList = [list_to_atom(M) || M <- string:tokens(Mods, ",")],
  Env0 = proplists:get_value(env, Props0, []),
  Env = lists:ukeysort(1, [{node_executable, Node}, {sidecar_entry, Entry} | Env0]),
  Props = lists:keystore(env, 1,
            lists:keystore(modules, 1,
              lists:keystore(vsn, 1, Props0, {vsn, Vsn}), {modules, ModList}), {env, Env}),
  ok = file:write_file(Out, io_lib:format("~p.~n", [{application, Name, Props}])),
  halt(0).' -extra "$SRC/$NAME.app.src" "$TMP" "$mods_csv" "$VSN" "$NODE_BIN" "$ENTRY"
if ! cmp -s "$TMP" "$APP"; then
  cp "$TMP" "$APP"
  echo "build-plugin: wrote ${APP#$ROOT/}"
fi
chmod 0644 "$APP"  # mktemp made it 0600
echo "build-plugin: $NAME $VSN for RabbitMQ $RMQ_VSN ready in ${OUT#$ROOT/} (node $NODE_BIN, sidecar $ENTRY)"
