/**
 * What the death of the message store costs, side by side: RabbitMQ's own
 * persistent message store process killed (`exit(Pid, kill)`: its vhost's
 * one_for_all supervisor restarts the vhost, every queue with it, and the
 * store recovers non-clean) against Warren's sidecar killed with SIGKILL (the
 * plugin starts a new one, every queue process on the node exits and
 * RabbitMQ restarts it, non-clean). RabbitMQ's side runs classic queues v1
 * and v2 on 3.x, v2 on 4.x (4.0 removed v1). Same node setup, same backlog:
 *
 *   Q durable queues holding M persistent messages of B bytes in all
 *   (bodies over RabbitMQ's 4 KiB queue-index embedding limit, so that they
 *   live in the message store), no consumers, on a fresh node each run; the
 *   store is killed, and the outage is the time from the kill until every
 *   queue, its death seen by a consumer, answers a passive declare with its
 *   whole backlog again (polled every 50 ms). Then it is killed a second time right after: RabbitMQ's
 *   vhost supervisor allows 2 restarts in 5 minutes.
 *
 *   npm run bench -- outage [--rabbitmq 3.10|4.0|4.3] [--messages 40000] [--body 5000] [--queues 4] [--runs 3]
 *
 * The results go to bench/results/outage-<series>.json: one line per store
 * and run, with the node's data on disk at the kill.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { freePort } from '../src/cli/ports';
import { runtimeFor } from '../src/cli/rabbitmq';
import { numberOption, runChildren, runIfChild } from './children';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Bytes of the files under `dir`. */
function bytesUnder(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += fs.statSync(path.join(e.parentPath, e.name)).size;
  }
  return total;
}

/** Every queue's message count by passive declare, or undefined while any does not answer. */
async function counts(url: string, queues: string[]): Promise<number[] | undefined> {
  const conn = await amqp.connect(url).catch(() => undefined);
  if (!conn) return undefined;
  conn.on('error', () => undefined);
  try {
    const out: number[] = [];
    for (const q of queues) {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      out.push((await ch.checkQueue(q)).messageCount);
      await ch.close();
    }
    return out;
  } catch {
    return undefined;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

const KILL_RABBIT_STORE =
  '{ok, Sup} = rabbit_vhost_sup_sup:get_vhost_sup(<<"/">>), ' +
  '[P] = [Pid || {msg_store_persistent, Pid, _, _} <- supervisor:which_children(Sup)], ' +
  'exit(P, kill), io:format("~p", [P]).';

/**
 * Kills the store; resolves with the seconds until every queue holds `want`
 * again, or undefined if not within `limitS`. A queue may answer a passive
 * declare before its process has learnt that the store died, so the counts
 * are trusted only once each queue's death has been seen: a consumer on each
 * (prefetch 1, never acking) gets its basic.cancel, or its connection closes.
 */
async function killAndTime(b: Broker, warren: boolean, url: string, queues: string[], want: number[], limitS: number): Promise<number | undefined> {
  const watch = await amqp.connect(url);
  watch.on('error', () => undefined);
  const seen = await Promise.all(
    queues.map(async (q) => {
      const ch = await watch.createChannel();
      ch.on('error', () => undefined);
      await ch.prefetch(1);
      let died!: () => void;
      const dead = new Promise<void>((r) => (died = r));
      ch.on('close', () => died());
      // 3.10 re-subscribes a consumer whose queue came back unless told to cancel it (4.x always cancels).
      const first = new Promise<void>((r) => void ch.consume(q, (m) => (m === null ? died() : r()), { arguments: { 'x-cancel-on-ha-failover': true } }));
      await first; // subscribed and holding one message
      return { dead }; // (a promise returned bare would be awaited here)
    }),
  );
  const t0 = process.hrtime.bigint();
  if (warren) {
    const [pid] = b.sidecarPids();
    if (pid === undefined) throw new Error('no sidecar runs');
    process.kill(pid, 'SIGKILL');
  } else {
    await b.ctl(['eval', KILL_RABBIT_STORE]);
  }
  const allSeen = Promise.all(seen.map((w) => w.dead));
  const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), limitS * 1000).unref());
  if ((await Promise.race([allSeen, timeout])) === 'timeout') throw new Error(`the queues' deaths were not seen within ${limitS} s`);
  await watch.close().catch(() => undefined);
  for (;;) {
    const got = await counts(url, queues);
    const at = Number(process.hrtime.bigint() - t0) / 1e9;
    if (got && JSON.stringify(got) === JSON.stringify(want)) return Math.round(at * 100) / 100;
    if (at > limitS) return undefined;
    await sleep(50);
  }
}

/** The targets: RabbitMQ's classic queues v1 (3.x only; 4.0 removed them) and v2 on its own store, and Warren. */
const LABELS: Record<string, string> = { cqv1: 'rabbitmq (classic queue v1)', cqv2: 'rabbitmq (classic queue v2)', warren: 'warren' };

async function child(store: string, n: number, bodyBytes: number, queueCount: number, run: number, series: string): Promise<void> {
  if (!(store in LABELS)) throw new Error(`unknown target ${store}: ${Object.keys(LABELS).join(', ')}`);
  const warren = store === 'warren';
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `warren-outage-${store}-`));
  const amqpPort = await freePort();
  const b = new Broker({ dataDir, amqpPort, distPort: await freePort(), epmdPort: await freePort(), nodeName: `warren-outage-${process.pid}@localhost`, rabbitmq: runtimeFor(series), warren, sidecarArgs: [] });
  const url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
  const queues = Array.from({ length: queueCount }, (_, i) => `outage-${i}`);
  const per = Math.floor(n / queueCount);
  try {
    await b.start();
    const conn = await amqp.connect(url);
    const ch = await conn.createConfirmChannel();
    const args = store === 'cqv1' ? { 'x-queue-version': 1 } : store === 'cqv2' ? { 'x-queue-version': 2 } : {};
    for (const q of queues) await ch.assertQueue(q, { durable: true, arguments: args });
    const body = Buffer.alloc(bodyBytes, 7);
    for (const q of queues) {
      for (let i = 0; i < per; i++) {
        ch.sendToQueue(q, body, { persistent: true });
        if (i % 1000 === 999) await ch.waitForConfirms();
      }
    }
    await ch.waitForConfirms();
    await conn.close();
    const want = queues.map(() => per);
    const before = await counts(url, queues);
    // (no consumer yet: the whole backlog is ready)
    if (JSON.stringify(before) !== JSON.stringify(want)) throw new Error(`before the kill the queues hold ${JSON.stringify(before)}, not ${JSON.stringify(want)}`);
    const storeBytes = bytesUnder(path.join(dataDir, 'mnesia'));
    const first = await killAndTime(b, warren, url, queues, want, 600);
    if (first === undefined) throw new Error('the queues did not come back within 600 s of the first kill');
    // A second death right after the first recovery: RabbitMQ's vhost supervisor allows few restarts in a window.
    const second = await killAndTime(b, warren, url, queues, want, 120);
    process.stdout.write(
      JSON.stringify({
        bench: 'outage',
        store: LABELS[store],
        killed: warren ? 'sidecar (SIGKILL)' : 'msg_store_persistent (exit kill)',
        rabbitmq: b.rabbitmq.version,
        run,
        queues: queueCount,
        messages: per * queueCount,
        bodyBytes,
        storeMB: Math.round(storeBytes / 1e5) / 10,
        outageSeconds: first,
        // null: the queues did not come back within 120 s
        secondKillOutageSeconds: second ?? null,
      }) + '\n',
    );
  } finally {
    await b.stop().catch(() => b.kill());
    // WARREN_BENCH_LOGS=DIR keeps each node's log
    if (process.env.WARREN_BENCH_LOGS) fs.cpSync(path.join(dataDir, 'log'), path.join(process.env.WARREN_BENCH_LOGS, `${store}-${run}`), { recursive: true });
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

function main(): void {
  const args = process.argv.slice(2);
  if (runIfChild(args, ([store, n, body, q, run, series]) => child(store, Number(n), Number(body), Number(q), Number(run), series))) return;
  const i = args.indexOf('--rabbitmq');
  const rt = runtimeFor(i >= 0 ? args[i + 1] : undefined);
  const opts = ['messages', 'body', 'queues'].map((k, j) => String(numberOption(args, k, [40_000, 5000, 4][j])));
  const runs = numberOption(args, 'runs', 3);
  // Alternating targets, a fresh node each run.
  const targets = rt.series.startsWith('3.') ? ['cqv1', 'cqv2', 'warren'] : ['cqv2', 'warren'];
  const children = Array.from({ length: runs }, (_, run) => targets.map((store) => [store, ...opts, String(run), rt.series])).flat();
  runChildren(`outage-${rt.series}`, __filename, [], children, `RabbitMQ ${rt.version} (Erlang ${rt.erlang}): its own message store process killed vs Warren's sidecar killed, same backlog; shared 2-core machine`);
}

main();
