/**
 * `npm run bench -- <name> [options]`: runs one benchmark suite of bench/.
 *   index     memory vs LevelDB index: RSS, store throughput (churn and backlog), clean restart
 *   recovery  store open after a crash (scan) and after a clean stop, both indexes
 *   e2e       RabbitMQ's own store vs Warren through a real broker: publish, memory, restart, consume
 *   outage    RabbitMQ's own message store process killed vs Warren's sidecar killed: time until the queues serve again
 *   store     in process, 1 KiB and 64 KiB: raw append+fdatasync vs MessageStore (write+sync, read, remove, churn with
 *             compaction) vs classic-level vs better-sqlite3
 *   broker    native classic queues v1 / v2 vs Warren-fsync / Warren-write through real brokers: throughput, latency, backlog, start times
 *   cluster   publish-confirm with queues spread over a 3-node cluster against 1 node, Warren against native
 *   profile   self time by function of .cpuprofile files (those `broker --profile` keeps)
 */
import { execFileSync } from 'child_process';
import * as path from 'path';

const [name, ...rest] = process.argv.slice(2);
const suites: Record<string, string> = { index: 'index-bench.js', recovery: 'recovery-bench.js', e2e: 'e2e-bench.js', outage: 'outage-bench.js', broker: 'broker-bench.js', cluster: 'cluster-bench.js', store: 'store-bench.js', profile: 'profile-summary.js' };
if (!name || !suites[name]) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(suites).join('|')}> [options]\n`);
  process.exit(2);
}
execFileSync(process.execPath, [path.join(__dirname, suites[name]), ...rest], { stdio: 'inherit' });
