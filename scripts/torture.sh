#!/usr/bin/env bash
# The long versions of the durability tests (docs/RELIABILITY.md), beyond what
# `npm test` runs:
#   npm run torture            fuzz, then kill
#   npm run torture -- fuzz    1,000,000 generated and mutated inputs to the decoders (200,000 a target)
#   npm run torture -- kill    100 kill -9 rounds of the broker and the sidecar under load, real broker
#   npm run torture -- soak    30 minutes of mixed load with compaction (WARREN_SOAK_MINUTES), real broker:
#                              nothing lost or duplicated, sidecar memory and descriptors flat
# The broker parts run on $WARREN_RABBITMQ (default: the host's broker).
# Seeds are printed; WARREN_FUZZ_SEED / WARREN_CRASH_SEED replay a run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(fuzz kill)
for w in "${what[@]}"; do
  case "$w" in
    fuzz) WARREN_FUZZ_RUNS="${WARREN_FUZZ_RUNS:-200000}" npx jest --config jest.config.js test/fuzz ;;
    kill) WARREN_CRASH_ROUNDS="${WARREN_CRASH_ROUNDS:-100}" npx jest --config jest.integration.config.js --runInBand integration/crash.test.ts ;;
    soak) npx jest --config jest.integration.config.js --runInBand --testMatch '<rootDir>/integration/soak/soak.ts' ;;
    *) echo "torture: unknown part '$w' (fuzz, kill, soak)" >&2; exit 2 ;;
  esac
done
