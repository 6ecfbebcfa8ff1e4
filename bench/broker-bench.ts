/**
 * Through a real broker, side by side in the same run: RabbitMQ's own classic
 * queues (CQ v1 on 3.10 only, CQ v2) against Warren confirming after an fsync
 * (its default) and Warren confirming after the write (`--durability write`:
 * fsync every 200 ms), driven by amqplib over AMQP 0-9-1. Every message is
 * persistent and every queue durable; publishers use a ConfirmChannel with
 * exactly W confirms outstanding (one more published as each returns),
 * consumers prefetch 256 and ack each message.
 *
 *   publish-1k-w256 / -w1000   publish-confirm 1 KiB
 *   consume-1k                 drain 20,000 queued 1 KiB messages (the fill is not measured)
 *   pubsub-1k                  one publisher (W=256) and one consumer (its own connection) at once
 *   publish-64k-w256 / -w1000  publish-confirm 64 KiB (also MB/s)
 *   consume-64k                drain queued 64 KiB messages
 *   fanout3-publish-1k         publish-confirm 1 KiB to a fanout exchange bound to 3 durable queues
 *   fanout3-drain-1k           then the deliveries drained from the 3 queues (deliveries/s)
 *   latency-3000               publish→confirm latency at a steady 3,000 msg/s for 5 s
 *   backlog                    fill N × 1 KiB; broker RSS holding it; clean stop + start; kill -9 + start
 *
 *   npm run bench -- broker [--rabbitmq 3.10,4.0] [--targets v1,v2,warren-fsync,warren-write]
 *                           [--runs 3] [--backlog 100000] [--scale 1] [--loads id,id,...]
 *                           [--out broker] [--profile] [--no-warmup] [--report-only]
 *
 * Each run measures every target once, the order rotated from run to run
 * (run 1: A B C D, run 2: B C D A, ...); a target's loads run on its own node
 * while every other node of the version is stopped. Medians of the runs are
 * reported. A node, once started, first runs an unmeasured warm-up (WARMUP
 * below, every target alike): a sidecar's JavaScript runs its first seconds
 * slower than after (1 KiB loads ~25% slower in their first pass), and a
 * broker runs for days, not seconds. --no-warmup measures from the start. --loads takes load ids (fanout3-1k for both fan-out rows; the
 * others as listed above). --scale multiplies the message counts of the throughput loads
 * (not the backlog's N: --backlog). Results: bench/results/<out>.json and
 * <out>.svg; with the default --out the "## `npm run bench -- broker`"
 * section of bench/README.md (between its broker:begin / broker:end
 * markers) is rewritten from them.
 *
 * --profile runs each Warren sidecar under `node --cpu-prof` (through the
 * plugin's node_executable setting pointing at a wrapper script); the
 * .cpuprofile files (written when a sidecar exits cleanly, so not for the
 * kill -9 of the backlog load) go to bench/results/<out>-profiles/.
 *
 * --report-only measures nothing: it writes the chart (and for the default
 * --out the README section) again from bench/results/<out>.json.
 */
import * as amqp from 'amqplib';
import type * as VegaT from 'vega';
import type * as VegaLiteT from 'vega-lite/build/index'; // its types (moduleResolution node does not read its exports map)
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { freePort } from '../src/cli/ports';
import { Runtime, runtimeFor } from '../src/cli/rabbitmq';
import { refreshReadmeSection } from './readme-section';
import { option, positiveOption } from './options';

const args = process.argv.slice(2);
import { publishWindow, seconds } from './amqp-load';

// ---------------------------------------------------------------- options

type Target = 'v1' | 'v2' | 'warren-fsync' | 'warren-write';
const ALL_TARGETS: Target[] = ['v1', 'v2', 'warren-fsync', 'warren-write'];
const TARGET_TITLE: Record<Target, string> = { v1: 'native CQ v1', v2: 'native CQ v2', 'warren-fsync': 'Warren-fsync', 'warren-write': 'Warren-write' };
type NodeKind = 'native' | 'warren-fsync' | 'warren-write';
const nodeOf = (t: Target): NodeKind => (t === 'v1' || t === 'v2' ? 'native' : t);
const isWarren = (t: Target) => t === 'warren-fsync' || t === 'warren-write';

const runs = Math.round(positiveOption('runs', 3));
const backlogN = Math.round(positiveOption('backlog', 100_000));
const scale = positiveOption('scale', 1);
const outName = option('out') ?? 'broker';
const profile = args.includes('--profile');
const warmup = !args.includes('--no-warmup');
const seriesList = (option('rabbitmq') ?? '3.10,4.0').split(',').filter(Boolean);
const targetsWanted = (option('targets') ?? ALL_TARGETS.join(',')).split(',').filter(Boolean) as Target[];
for (const t of targetsWanted) if (!ALL_TARGETS.includes(t)) throw new Error(`--targets: unknown target ${t} (known: ${ALL_TARGETS.join(', ')})`);

const log = (s: string) => process.stderr.write(`[broker-bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const KiB = 1024;

// ---------------------------------------------------------------- loads

type Metrics = Record<string, number>;
interface Ctx {
  b: Broker;
  url: string;
  target: Target;
  /** queue arguments: x-queue-version for the native targets */
  qargs: Record<string, unknown>;
  tag: string;
  /** reads the sidecar's event-loop delay since the previous read (Warren only), recorded under `row` */
  loop: (row: string) => Promise<void>;
  /** called before a Warren node reads stats: discards the period so far */
  loopReset: () => Promise<void>;
}
interface Load {
  id: string;
  /** the result rows (usually one: the load's own id) */
  rows: string[];
  title: string;
  bodyBytes: number;
  count: number;
  window?: number;
  /** targets it runs for (default all) */
  only?: Target[];
  run: (ctx: Ctx) => Promise<Record<string, Metrics>>;
}

function body(bytes: number): Buffer {
  const b = Buffer.alloc(bytes, 0x61);
  return b;
}

/** Consumes n deliveries from the queues (prefetch 256 per consumer, an ack each); resolves with the seconds from the first consume call. */
async function consumeN(ch: amqp.Channel, queues: string[], n: number, expectedBytes: number): Promise<number> {
  await ch.prefetch(256);
  const t0 = process.hrtime.bigint();
  let got = 0;
  const tags: string[] = [];
  await new Promise<void>((resolve, reject) => {
    ch.once('error', reject);
    for (const q of queues) {
      void ch
        .consume(
          q,
          (m) => {
            if (!m) return reject(new Error(`consumer of ${q} cancelled`));
            if (m.content.length !== expectedBytes) reject(new Error(`a ${m.content.length}-byte body, expected ${expectedBytes}`));
            ch.ack(m);
            if (++got === n) resolve();
          },
          { noAck: false },
        )
        .then((r) => tags.push(r.consumerTag), reject);
    }
  });
  const secs = seconds(t0);
  for (const t of tags) await ch.cancel(t);
  return secs;
}

const rate = (n: number, secs: number) => Math.round(n / secs);
const mbs = (n: number, bytes: number, secs: number) => Math.round((n * bytes) / 2 ** 20 / secs * 10) / 10;

/** The warm-up of a freshly started node: each size published with confirms (256 in flight) and consumed, on a queue of the target's kind, deleted after. */
const WARMUP = [
  { bodyBytes: KiB, count: 20_000 },
  { bodyBytes: 64 * KiB, count: 1_000 },
];

async function warmUp(url: string, qargs: Record<string, unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await withConn(url, async (c) => {
    const pub = await c.createConfirmChannel();
    const ch = await c.createChannel();
    for (const w of WARMUP) {
      const q = `warmup-${w.bodyBytes}`;
      await fresh(pub, q, qargs);
      await publishWindow(pub, '', q, body(w.bodyBytes), w.count, 256);
      await consumeN(ch, [q], w.count, w.bodyBytes);
      await pub.deleteQueue(q);
    }
  });
  return seconds(t0);
}

async function withConn<T>(url: string, f: (c: amqp.ChannelModel) => Promise<T>): Promise<T> {
  const c = await amqp.connect(url);
  // a connection the broker drops (a stop on SIGINT) fails the load through its promises; the event itself must not crash us
  c.on('error', () => undefined);
  try {
    return await f(c);
  } finally {
    await c.close().catch(() => undefined);
  }
}

async function fresh(ch: amqp.Channel, q: string, qargs: Record<string, unknown>): Promise<void> {
  await ch.deleteQueue(q).catch(() => undefined);
  await ch.assertQueue(q, { durable: true, arguments: qargs });
}

function publishLoad(id: string, bodyBytes: number, count: number, window: number): Load {
  return {
    id,
    rows: [id],
    title: `publish-confirm ${bodyBytes / KiB} KiB, W=${window}`,
    bodyBytes,
    count,
    window,
    run: (ctx) =>
      withConn(ctx.url, async (c) => {
        const ch = await c.createConfirmChannel();
        const q = `${id}-${ctx.tag}`;
        await fresh(ch, q, ctx.qargs);
        await ctx.loopReset();
        const secs = await publishWindow(ch, '', q, body(bodyBytes), count, window);
        await ctx.loop(id);
        await ch.deleteQueue(q);
        return { [id]: { msgPerSec: rate(count, secs), MBPerSec: mbs(count, bodyBytes, secs), seconds: secs } };
      }),
  };
}

function consumeLoad(id: string, bodyBytes: number, count: number): Load {
  return {
    id,
    rows: [id],
    title: `consume-ack ${bodyBytes / KiB} KiB, ${count.toLocaleString('en')} queued first (drain only)`,
    bodyBytes,
    count,
    run: (ctx) =>
      withConn(ctx.url, async (c) => {
        const pub = await c.createConfirmChannel();
        const q = `${id}-${ctx.tag}`;
        await fresh(pub, q, ctx.qargs);
        await publishWindow(pub, '', q, body(bodyBytes), count, 1000);
        const ch = await c.createChannel();
        await ctx.loopReset();
        const secs = await consumeN(ch, [q], count, bodyBytes);
        await ctx.loop(id);
        await ch.deleteQueue(q);
        return { [id]: { msgPerSec: rate(count, secs), MBPerSec: mbs(count, bodyBytes, secs), seconds: secs } };
      }),
  };
}

function pubsubLoad(id: string, bodyBytes: number, count: number): Load {
  return {
    id,
    rows: [id],
    title: `publish (W=256) and consume at once, ${bodyBytes / KiB} KiB, one connection each`,
    bodyBytes,
    count,
    window: 256,
    run: (ctx) =>
      withConn(ctx.url, (pc) =>
        withConn(ctx.url, async (cc) => {
          const pub = await pc.createConfirmChannel();
          const q = `${id}-${ctx.tag}`;
          await fresh(pub, q, ctx.qargs);
          const ch = await cc.createChannel();
          await ctx.loopReset();
          const t0 = process.hrtime.bigint();
          const [pubSecs, conSecs] = await Promise.all([publishWindow(pub, '', q, body(bodyBytes), count, 256), consumeN(ch, [q], count, bodyBytes)]);
          const secs = seconds(t0);
          await ctx.loop(id);
          await pub.deleteQueue(q);
          return { [id]: { msgPerSec: rate(count, secs), publishPerSec: rate(count, pubSecs), consumePerSec: rate(count, conSecs), seconds: secs } };
        }),
      ),
  };
}

function fanoutLoad(bodyBytes: number, count: number): Load {
  const pubId = 'fanout3-publish-1k';
  const drainId = 'fanout3-drain-1k';
  return {
    id: 'fanout3-1k',
    rows: [pubId, drainId],
    title: `fan-out to 3 durable queues: publish-confirm ${bodyBytes / KiB} KiB W=256, then the deliveries drained from the 3 queues`,
    bodyBytes,
    count,
    window: 256,
    run: (ctx) =>
      withConn(ctx.url, async (c) => {
        const pub = await c.createConfirmChannel();
        const ex = `fanout3-${ctx.tag}`;
        const qs = [1, 2, 3].map((i) => `fanout3-${ctx.tag}-${i}`);
        await pub.deleteExchange(ex).catch(() => undefined);
        await pub.assertExchange(ex, 'fanout', { durable: true });
        for (const q of qs) {
          await fresh(pub, q, ctx.qargs);
          await pub.bindQueue(q, ex, '');
        }
        await ctx.loopReset();
        const pubSecs = await publishWindow(pub, ex, '', body(bodyBytes), count, 256);
        await ctx.loop(pubId);
        const ch = await c.createChannel();
        await ctx.loopReset();
        const drainSecs = await consumeN(ch, qs, 3 * count, bodyBytes);
        await ctx.loop(drainId);
        for (const q of qs) await pub.deleteQueue(q);
        await pub.deleteExchange(ex);
        return {
          [pubId]: { msgPerSec: rate(count, pubSecs), deliveriesPerSec: rate(3 * count, pubSecs), seconds: pubSecs },
          [drainId]: { msgPerSec: rate(3 * count, drainSecs), seconds: drainSecs },
        };
      }),
  };
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
const r2 = (x: number) => Math.round(x * 100) / 100;
const r1 = (x: number) => Math.round(x * 10) / 10;

function latencyLoad(id: string, bodyBytes: number, perSec: number, secs: number): Load {
  const count = Math.round(perSec * secs);
  return {
    id,
    rows: [id],
    title: `publish→confirm latency, ${bodyBytes / KiB} KiB at a steady ${perSec.toLocaleString('en')} msg/s for ${secs} s (a 5 ms timer sends the messages due)`,
    bodyBytes,
    count,
    run: (ctx) =>
      withConn(ctx.url, async (c) => {
        const ch = await c.createConfirmChannel();
        const q = `${id}-${ctx.tag}`;
        await fresh(ch, q, ctx.qargs);
        const content = body(bodyBytes);
        await ctx.loopReset();
        const lat: number[] = [];
        let lastSend = 0n;
        const t0 = process.hrtime.bigint();
        await new Promise<void>((resolve, reject) => {
          let sent = 0;
          let confirmed = 0;
          ch.once('error', reject);
          const tick = () => {
            const due = Math.min(count, Math.floor((Number(process.hrtime.bigint() - t0) / 1e9) * perSec) + 1);
            while (sent < due) {
              const ts = process.hrtime.bigint();
              sent++;
              ch.sendToQueue(q, content, { persistent: true }, (err: unknown) => {
                if (err) return reject(new Error(`nacked: ${String(err)}`));
                lat.push(Number(process.hrtime.bigint() - ts) / 1e6);
                if (++confirmed === count) resolve();
              });
            }
            if (sent >= count) {
              clearInterval(timer);
              lastSend = process.hrtime.bigint();
            }
          };
          const timer = setInterval(tick, 5);
          tick();
        });
        const total = seconds(t0);
        await ctx.loop(id);
        await ch.deleteQueue(q);
        lat.sort((a, b) => a - b);
        return {
          [id]: {
            p50Ms: r2(pct(lat, 50)),
            p99Ms: r2(pct(lat, 99)),
            maxMs: r2(lat[lat.length - 1]),
            achievedPublishPerSec: rate(count, Number(lastSend - t0) / 1e9),
            achievedConfirmPerSec: rate(count, total),
          },
        };
      }),
  };
}

/** The startup seconds logged after byte `from` of the node log: "Starting RabbitMQ" to "Server startup complete". */
function loggedStartup(file: string, from: number): number {
  const text = fs.readFileSync(file, 'utf8').slice(from);
  const ts = (line: string) => {
    const m = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d\.\d+)([+-]\d\d:\d\d|Z)?/.exec(line);
    if (!m) return NaN;
    return Date.parse(`${m[1]}T${m[2].slice(0, 12)}${m[3] ?? 'Z'}`); // ms precision is enough
  };
  const lines = text.split('\n');
  const s = lines.findIndex((l) => l.includes('Starting RabbitMQ'));
  const e = s < 0 ? -1 : lines.findIndex((l, i) => i > s && l.includes('Server startup complete'));
  if (s < 0 || e < 0) throw new Error(`no "Starting RabbitMQ" … "Server startup complete" in ${file} after byte ${from}`);
  return Math.round(ts(lines[e]) - ts(lines[s])) / 1000;
}

function rssMB(pid: number | null): number {
  if (pid === null) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

function backlogLoad(n: number): Load {
  const id = 'backlog';
  return {
    id,
    rows: [id],
    title: `backlog of ${n.toLocaleString('en')} × 1 KiB: broker RSS holding it, clean stop + start, kill -9 + start`,
    bodyBytes: KiB,
    count: n,
    window: 1000,
    only: ['v1', 'v2', 'warren-fsync'],
    run: async (ctx) => {
      const { b } = ctx;
      const q = `${id}-${ctx.tag}`;
      const fillSecs = await withConn(ctx.url, async (c) => {
        const ch = await c.createConfirmChannel();
        await fresh(ch, q, ctx.qargs);
        await ctx.loopReset();
        const s = await publishWindow(ch, '', q, body(KiB), n, 1000);
        await ctx.loop(id);
        return s;
      });
      await sleep(1000);
      const vmRss = rssMB(b.beamPid());
      const sidecarRss = b.sidecarPids().reduce((s, p) => s + rssMB(p), 0);
      const restart = async (how: 'stop' | 'kill') => {
        const t = process.hrtime.bigint();
        if (how === 'stop') await b.stop();
        else await b.kill();
        const downSecs = seconds(t);
        const from = fs.existsSync(b.logFile) ? fs.statSync(b.logFile).size : 0;
        const t1 = process.hrtime.bigint();
        await b.start();
        const readySecs = seconds(t1);
        // wall time until the queue answers a passive declare with all n messages
        for (;;) {
          const have = await withConn(ctx.url, async (c) => {
            const ch = await c.createChannel();
            ch.on('error', () => undefined);
            return (await ch.checkQueue(q)).messageCount;
          }).catch(() => -1);
          if (have === n) break;
          if (seconds(t1) > 300) throw new Error(`${q}: ${have} messages 300 s after the ${how} restart, expected ${n}`);
          await sleep(50);
        }
        return { downSecs, readySecs, wallSecs: seconds(t1), loggedSecs: loggedStartup(b.logFile, from) };
      };
      const clean = await restart('stop');
      const killed = await restart('kill');
      await withConn(ctx.url, async (c) => {
        const ch = await c.createChannel();
        await ch.deleteQueue(q);
      });
      return {
        [id]: {
          fillPerSec: rate(n, fillSecs),
          rssMB: r1(vmRss + sidecarRss),
          vmRssMB: r1(vmRss),
          sidecarRssMB: r1(sidecarRss),
          cleanStopSeconds: r2(clean.downSecs),
          cleanStartSeconds: clean.loggedSecs,
          cleanStartWallSeconds: r2(clean.wallSecs),
          killStartSeconds: killed.loggedSecs,
          killStartWallSeconds: r2(killed.wallSecs),
        },
      };
    },
  };
}

const c = (n: number) => Math.max(1, Math.round(n * scale));
// Counts: 1–4 s a load on this 2-core machine (native v2 is the fastest, ~1.2 s); a full default run
// (3.10 and 4.0, all targets, 3 runs) measured 3.3 + 2.65 min a run at 30,000 / 5,000 / 15,000, cut
// by about a sixth to stay well under 20 minutes.
const LOADS: Load[] = [
  publishLoad('publish-1k-w256', KiB, c(25_000), 256),
  publishLoad('publish-1k-w1000', KiB, c(25_000), 1000),
  consumeLoad('consume-1k', KiB, c(20_000)),
  pubsubLoad('pubsub-1k', KiB, c(25_000)),
  publishLoad('publish-64k-w256', 64 * KiB, c(4_000), 256),
  publishLoad('publish-64k-w1000', 64 * KiB, c(4_000), 1000),
  consumeLoad('consume-64k', 64 * KiB, c(4_000)),
  fanoutLoad(KiB, c(12_000)),
  latencyLoad('latency-3000', KiB, 3000, 5),
  backlogLoad(backlogN),
];
const loadsWanted = option('loads')?.split(',') ?? LOADS.map((l) => l.id);
for (const l of loadsWanted) if (!LOADS.some((x) => x.id === l)) throw new Error(`--loads: unknown load ${l} (known: ${LOADS.map((x) => x.id).join(', ')})`);
const loads = LOADS.filter((l) => loadsWanted.includes(l.id));

/** The figures of each result row: which one the tables and ratios use, and whether higher is better. */
interface RowMetric {
  row: string;
  metric: string;
  label: string;
  unit: string;
  higherBetter: boolean;
  throughput: boolean;
  /** a figure to show, not to compare (no ratio) */
  noRatio?: boolean;
}
const ROW_METRICS: RowMetric[] = [
  ...['publish-1k-w256', 'publish-1k-w1000', 'consume-1k', 'pubsub-1k', 'publish-64k-w256', 'publish-64k-w1000', 'consume-64k', 'fanout3-publish-1k', 'fanout3-drain-1k'].map((row) => ({
    row,
    metric: 'msgPerSec',
    label: row,
    unit: row === 'fanout3-drain-1k' ? 'deliveries/s' : 'msg/s',
    higherBetter: true,
    throughput: true,
  })),
  { row: 'latency-3000', metric: 'p50Ms', label: 'latency-3000 p50', unit: 'ms', higherBetter: false, throughput: false },
  { row: 'latency-3000', metric: 'p99Ms', label: 'latency-3000 p99', unit: 'ms', higherBetter: false, throughput: false },
  { row: 'latency-3000', metric: 'maxMs', label: 'latency-3000 max', unit: 'ms', higherBetter: false, throughput: false },
  { row: 'latency-3000', metric: 'achievedPublishPerSec', label: 'latency-3000 achieved publish rate', unit: 'msg/s', higherBetter: true, throughput: false, noRatio: true },
  { row: 'backlog', metric: 'rssMB', label: 'backlog RSS', unit: 'MB', higherBetter: false, throughput: false },
  { row: 'backlog', metric: 'cleanStartSeconds', label: 'backlog clean start (log)', unit: 's', higherBetter: false, throughput: false },
  { row: 'backlog', metric: 'killStartSeconds', label: 'backlog kill -9 start (log)', unit: 's', higherBetter: false, throughput: false },
  { row: 'backlog', metric: 'cleanStartWallSeconds', label: 'backlog clean start, wall until N', unit: 's', higherBetter: false, throughput: false },
  { row: 'backlog', metric: 'killStartWallSeconds', label: 'backlog kill -9 start, wall until N', unit: 's', higherBetter: false, throughput: false },
];

// ---------------------------------------------------------------- nodes

const live = new Set<Broker>();
const dirs: string[] = [];
let cleaningUp: Promise<void> | null = null;
let interrupted = false;

function cleanup(): Promise<void> {
  cleaningUp ??= (async () => {
    for (const b of live) await b.stop(60_000).catch(() => b.kill().catch(() => undefined));
    live.clear();
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  })();
  return cleaningUp;
}
process.on('SIGINT', () => {
  log('SIGINT: stopping the nodes this bench started');
  interrupted = true;
  // whatever the interrupted load throws now is of no interest
  process.on('uncaughtException', (e) => log(`(while stopping) ${e.message}`));
  process.on('unhandledRejection', () => undefined);
  void cleanup().finally(() => process.exit(130));
});
process.on('SIGTERM', () => {
  void cleanup().finally(() => process.exit(143));
});

async function makeNode(kind: NodeKind, rt: Runtime): Promise<Broker> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `warren-broker-bench-${kind}-`));
  dirs.push(dataDir);
  const amqpPort = await freePort();
  const warren = kind !== 'native';
  // --plugin-env '{"read_ahead_bytes":4194304}': rabbitmq_warren settings of the Warren nodes, for experiments
  const pluginEnv: Record<string, string | number> = warren ? (JSON.parse(option('plugin-env') ?? '{}') as Record<string, string | number>) : {};
  if (warren && profile) {
    const profDir = path.resolve(__dirname, `../../bench/results/${outName}-profiles/${rt.series}-${kind}`);
    fs.mkdirSync(profDir, { recursive: true });
    const wrapper = path.join(dataDir, 'node-cpu-prof.sh');
    // The data dir, this checkout and the host's node binary are at the same paths inside a broker's Debian root (scripts/in-root.sh).
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${JSON.stringify(fs.realpathSync(process.execPath))} --cpu-prof --cpu-prof-dir=${JSON.stringify(profDir)} "$@"\n`, { mode: 0o755 });
    pluginEnv.node_executable = wrapper;
  }
  return new Broker({
    dataDir,
    amqpPort,
    distPort: await freePort(),
    epmdPort: await freePort(),
    nodeName: `warren-bb-${kind}-${process.pid}@localhost`,
    rabbitmq: rt,
    warren,
    sidecarArgs: kind === 'warren-write' ? ['--durability', 'write'] : [],
    pluginEnv,
  });
}

interface LoopRead {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  sinceMs: number;
  /** The longest GC pause in the period, and their sum (sidecars from before 2026-12-07 do not report them). */
  gcMaxMs?: number;
  gcTotalMs?: number;
}
async function loopDelay(b: Broker): Promise<LoopRead & { pid: number }> {
  const out = await b.ctl(['eval', 'io:format("~s", [rabbit_warren_sidecar:stats()]).'], 60_000);
  const stats = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1)) as { pid: number; eventLoopDelay?: LoopRead };
  if (!stats.eventLoopDelay) throw new Error('the sidecar stats have no eventLoopDelay (is dist/ built from the current sources?)');
  return { ...stats.eventLoopDelay, pid: stats.pid };
}

/** CPU seconds (user + system, all threads) a process has used, from /proc/<pid>/stat; 0 if it is gone. */
function cpuSeconds(pid: number | null | undefined): number {
  if (!pid) return 0;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}
/** USER_HZ: what /proc counts CPU time in (100 on Linux everywhere in practice). */
const CLOCK_TICKS = 100;

/**
 * Seconds a process's main thread has run on a CPU and waited, runnable, on
 * a run queue for one (/proc/<pid>/task/<pid>/schedstat); undefined if it is gone.
 * A loop delay is late turns; the wait says how much of that lateness was
 * the thread ready to run with no CPU free.
 */
function mainThreadSched(pid: number | null | undefined): { run: number; wait: number } | undefined {
  if (!pid) return undefined;
  try {
    const [run, wait] = fs.readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return { run: run / 1e9, wait: wait / 1e9 };
  } catch {
    return undefined;
  }
}

/** Where the CPU of a load's measured part went: the broker's VM, the sidecar (Warren), this load generator; percent of one core. */
interface CpuSplit {
  vmPct: number;
  sidecarPct?: number;
  clientPct: number;
  /** The sidecar's main thread (its event loop): % of the load's time on a CPU, and % runnable but waiting for one. */
  sidecarMainRunPct?: number;
  sidecarMainWaitPct?: number;
}
class CpuMeter {
  private t0 = 0n;
  private vm0 = 0;
  private sc0 = 0;
  private cl0 = 0;
  private sched0: { run: number; wait: number } | undefined;
  constructor(
    private readonly vmPid: () => number | null,
    private readonly sidecarPid: () => number | undefined,
  ) {}
  start(): void {
    this.vm0 = cpuSeconds(this.vmPid());
    this.sc0 = cpuSeconds(this.sidecarPid());
    this.sched0 = mainThreadSched(this.sidecarPid());
    const u = process.cpuUsage();
    this.cl0 = (u.user + u.system) / 1e6;
    this.t0 = process.hrtime.bigint();
  }
  read(): CpuSplit {
    const wall = seconds(this.t0);
    const u = process.cpuUsage();
    const pct = (x: number) => Math.round((100 * x) / wall);
    const sched0 = this.sched0;
    const sched = sched0 && mainThreadSched(this.sidecarPid());
    return {
      vmPct: pct(cpuSeconds(this.vmPid()) - this.vm0),
      sidecarPct: this.sidecarPid() ? pct(cpuSeconds(this.sidecarPid()) - this.sc0) : undefined,
      clientPct: pct((u.user + u.system) / 1e6 - this.cl0),
      sidecarMainRunPct: sched0 && sched ? pct(sched.run - sched0.run) : undefined,
      sidecarMainWaitPct: sched0 && sched ? pct(sched.wait - sched0.wait) : undefined,
    };
  }
}

// ---------------------------------------------------------------- run

interface Sample {
  series: string;
  target: Target;
  row: string;
  run: number;
  metrics: Metrics;
  loop?: { p99Ms: number; maxMs: number; sinceMs: number; gcMaxMs?: number; gcTotalMs?: number };
  cpu?: CpuSplit;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function runVersion(series: string, samples: Sample[], meta: Record<string, unknown>[]): Promise<void> {
  const rt = runtimeFor(series);
  const targets = targetsWanted.filter((t) => !(t === 'v1' && !rt.version.startsWith('3.')));
  if (targets.length < targetsWanted.length) log(`RabbitMQ ${rt.version}: no classic queue v1 (4.0 removed it); targets ${targets.join(', ')}`);
  meta.push({ series: rt.series, rabbitmq: rt.version, erlang: rt.erlang, root: rt.root ?? 'host', targets });
  const nodes = new Map<NodeKind, Broker>();
  for (const t of targets) if (!nodes.has(nodeOf(t))) nodes.set(nodeOf(t), await makeNode(nodeOf(t), rt));
  const use = async (kind: NodeKind, qargs: Record<string, unknown>): Promise<Broker> => {
    for (const [k, b] of nodes) {
      if (k !== kind && live.has(b)) {
        log(`${series}: stopping the ${k} node`);
        await b.stop();
        live.delete(b);
      }
    }
    const b = nodes.get(kind)!;
    if (!live.has(b)) {
      log(`${series}: starting the ${kind} node (${b.dataDir})`);
      live.add(b);
      await b.start();
      if (warmup) log(`${series}: ${kind} node warmed up in ${(await warmUp(`amqp://guest:guest@127.0.0.1:${b.amqpPort}`, qargs)).toFixed(1)} s (not measured)`);
    }
    return b;
  };
  try {
    for (let run = 0; run < runs; run++) {
      const order = targets.map((_, i) => targets[(i + run) % targets.length]);
      log(`${series} run ${run + 1}/${runs}: ${order.join(' ')}`);
      for (const target of order) {
        const qargs = target === 'v1' ? { 'x-queue-version': 1 } : target === 'v2' ? { 'x-queue-version': 2 } : {};
        const b = await use(nodeOf(target), qargs);
        const warren = isWarren(target);
        const loopOf = new Map<string, LoopRead>();
        const cpuOf = new Map<string, CpuSplit>();
        let sidecarPid: number | undefined;
        const vmPid = b.beamPid();
        const meter = new CpuMeter(() => vmPid, () => sidecarPid);
        const ctx: Ctx = {
          b,
          url: `amqp://guest:guest@127.0.0.1:${b.amqpPort}`,
          target,
          qargs,
          tag: `${target}-r${run + 1}`,
          loopReset: async () => {
            if (warren) sidecarPid = (await loopDelay(b)).pid; // discards the period before the load
            meter.start();
          },
          loop: async (row) => {
            cpuOf.set(row, meter.read());
            if (!warren) return;
            const r = await loopDelay(b);
            loopOf.set(row, r);
          },
        };
        for (const load of loads) {
          if (load.only && !load.only.includes(target)) continue;
          const t = process.hrtime.bigint();
          const out = await load.run(ctx);
          for (const [row, metrics] of Object.entries(out)) {
            const lr = loopOf.get(row);
            const cpu = cpuOf.get(row);
            samples.push({ series, target, row, run: run + 1, metrics, loop: lr ? { p99Ms: lr.p99Ms, maxMs: lr.maxMs, sinceMs: Math.round(lr.sinceMs), gcMaxMs: lr.gcMaxMs, gcTotalMs: lr.gcTotalMs } : undefined, cpu });
            const main = ROW_METRICS.find((m) => m.row === row)!;
            const fig = ROW_METRICS.filter((m) => m.row === row)
              .map((m) => `${m.metric} ${metrics[m.metric]}`)
              .join(', ');
            log(
              `${series} run ${run + 1} ${target.padEnd(12)} ${row.padEnd(20)} ${fig}${main.throughput && metrics.MBPerSec !== undefined && load.bodyBytes > KiB ? ` (${metrics.MBPerSec} MB/s)` : ''}` +
                `${cpu ? ` | CPU VM ${cpu.vmPct}%${cpu.sidecarPct !== undefined ? ` sidecar ${cpu.sidecarPct}%` : ''} client ${cpu.clientPct}%` : ''}` +
                `${lr ? ` | sidecar loop p99 ${lr.p99Ms} ms max ${lr.maxMs} ms${lr.maxMs > 20 ? ' STALL > 20 ms' : ''}${lr.gcMaxMs !== undefined ? `, longest GC ${lr.gcMaxMs} ms` : ''}` : ''}` +
                `${cpu?.sidecarMainWaitPct !== undefined ? `, main thread ran ${cpu.sidecarMainRunPct}% waited for a CPU ${cpu.sidecarMainWaitPct}%` : ''} [${seconds(t).toFixed(1)} s]`,
            );
          }
        }
      }
    }
  } finally {
    for (const b of nodes.values()) {
      await b.stop(60_000).catch(() => b.kill().catch(() => undefined));
      live.delete(b);
    }
    for (const b of nodes.values()) {
      const i = dirs.indexOf(b.dataDir);
      if (i >= 0) dirs.splice(i, 1);
      fs.rmSync(b.dataDir, { recursive: true, force: true });
    }
  }
}

// ---------------------------------------------------------------- report

interface Summary {
  series: string;
  rabbitmq: string;
  target: Target;
  row: string;
  medians: Metrics;
  runs: Record<string, number[]>;
  loopDelay?: { p99Ms: number[]; maxMs: number[]; maxOfMaxMs: number; stall: boolean; gcMaxOfMaxMs?: number };
  /** Medians of the runs' CPU split (runs from before 2026-12-07 afternoon have none). */
  cpu?: CpuSplit;
}

function summarize(samples: Sample[], versions: Map<string, string>): Summary[] {
  const out: Summary[] = [];
  const keys = new Map<string, Sample[]>();
  for (const s of samples) {
    const k = `${s.series}|${s.target}|${s.row}`;
    if (!keys.has(k)) keys.set(k, []);
    keys.get(k)!.push(s);
  }
  for (const group of keys.values()) {
    const { series, target, row } = group[0];
    const runsOf: Record<string, number[]> = {};
    for (const s of group) for (const [m, v] of Object.entries(s.metrics)) (runsOf[m] ??= []).push(Number.isInteger(v) ? v : r2(v));
    const medians: Metrics = {};
    for (const [m, vs] of Object.entries(runsOf)) medians[m] = r2(median(vs));
    const loops = group.map((s) => s.loop).filter((l): l is NonNullable<Sample['loop']> => l !== undefined);
    const cpus = group.map((s) => s.cpu).filter((c): c is CpuSplit => c !== undefined);
    const sc = cpus.map((c) => c.sidecarPct).filter((x): x is number => x !== undefined);
    const defined = (xs: (number | undefined)[]) => xs.filter((x): x is number => x !== undefined);
    const mainRun = defined(cpus.map((c) => c.sidecarMainRunPct));
    const mainWait = defined(cpus.map((c) => c.sidecarMainWaitPct));
    out.push({
      series,
      rabbitmq: versions.get(series) ?? series,
      target,
      row,
      medians,
      runs: runsOf,
      loopDelay: loops.length
        ? {
            p99Ms: loops.map((l) => l.p99Ms),
            maxMs: loops.map((l) => l.maxMs),
            maxOfMaxMs: Math.max(...loops.map((l) => l.maxMs)),
            stall: loops.some((l) => l.maxMs > 20),
            gcMaxOfMaxMs: loops.every((l) => l.gcMaxMs !== undefined) ? Math.max(...loops.map((l) => l.gcMaxMs!)) : undefined,
          }
        : undefined,
      cpu: cpus.length
        ? {
            vmPct: median(cpus.map((c) => c.vmPct)),
            sidecarPct: sc.length ? median(sc) : undefined,
            clientPct: median(cpus.map((c) => c.clientPct)),
            sidecarMainRunPct: mainRun.length ? median(mainRun) : undefined,
            sidecarMainWaitPct: mainWait.length ? median(mainWait) : undefined,
          }
        : undefined,
    });
  }
  return out;
}

const PAIRS: [Target, Target][] = [
  ['warren-fsync', 'v1'],
  ['warren-write', 'v2'],
  ['warren-fsync', 'v2'],
  ['warren-write', 'v1'],
];

/** Warren's advantage: throughput warren/native; latency, memory and times native/warren. Above 1: Warren is better. */
function advantage(rm: RowMetric, warren: number, native: number): number | null {
  if (!Number.isFinite(warren) || !Number.isFinite(native) || warren <= 0 || native <= 0) return null;
  return r2(rm.higherBetter ? warren / native : native / warren);
}

function ratios(sums: Summary[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const fig = (series: string, t: Target, rm: RowMetric) => sums.find((s) => s.series === series && s.target === t && s.row === rm.row)?.medians[rm.metric];
  for (const series of [...new Set(sums.map((s) => s.series))]) {
    for (const rm of ROW_METRICS.filter((m) => !m.noRatio)) {
      const r: Record<string, number | null> = {};
      for (const [w, n] of PAIRS) {
        const a = fig(series, w, rm);
        const b = fig(series, n, rm);
        if (a !== undefined && b !== undefined) r[`${w}/${n}`] = advantage(rm, a, b);
      }
      if (Object.keys(r).length === 0) continue;
      out.push({ bench: 'broker-ratio', rabbitmq: sums.find((s) => s.series === series)!.rabbitmq, row: rm.row, metric: rm.metric, inverted: !rm.higherBetter, ratios: r });
    }
  }
  return out;
}

interface Criterion {
  rabbitmq: string;
  target: string;
  figures: string;
  met: boolean | null;
}

function criteria(sums: Summary[]): Criterion[] {
  const out: Criterion[] = [];
  const get = (series: string, t: Target, row: string, metric: string) => sums.find((s) => s.series === series && s.target === t && s.row === row)?.medians[metric];
  for (const series of [...new Set(sums.map((s) => s.series))]) {
    const rabbitmq = sums.find((s) => s.series === series)!.rabbitmq;
    // throughput rows
    for (const [w, n] of [
      ['warren-write', 'v2'],
      ['warren-fsync', 'v1'],
    ] as [Target, Target][]) {
      const rows = ROW_METRICS.filter((m) => m.throughput)
        .map((m) => ({ m, a: get(series, w, m.row, m.metric), b: get(series, n, m.row, m.metric) }))
        .filter((x): x is { m: RowMetric; a: number; b: number } => x.a !== undefined && x.b !== undefined);
      if (rows.length === 0) continue;
      const worst = rows.reduce((x, y) => (y.a / y.b < x.a / x.b ? y : x));
      const failing = rows.filter((x) => x.a < 1.2 * x.b).map((x) => `${x.m.row} ${r2(x.a / x.b)}×`);
      out.push({
        rabbitmq,
        target: `every throughput row: ${TARGET_TITLE[w]} ≥ 1.2× ${TARGET_TITLE[n]}`,
        figures: `${rows.length} rows; lowest ${worst.m.row} ${r2(worst.a / worst.b)}×${failing.length ? `; below 1.2×: ${failing.join(', ')}` : ''}`,
        met: failing.length === 0,
      });
    }
    for (const w of ['warren-fsync', 'warren-write'] as Target[]) {
      const p50 = get(series, w, 'latency-3000', 'p50Ms');
      const p99 = get(series, w, 'latency-3000', 'p99Ms');
      const v50 = get(series, 'v2', 'latency-3000', 'p50Ms');
      const v99 = get(series, 'v2', 'latency-3000', 'p99Ms');
      if (p50 === undefined || p99 === undefined || v50 === undefined || v99 === undefined) continue;
      out.push({
        rabbitmq,
        target: `latency at 3,000 msg/s: ${TARGET_TITLE[w]} p50 ≤ v2 p50 + 1 ms and p99 ≤ v2 p99`,
        figures: `p50 ${p50} vs ${v50} ms, p99 ${p99} vs ${v99} ms`,
        met: p50 <= v50 + 1 && p99 <= v99,
      });
    }
    for (const n of ['v1', 'v2'] as Target[]) {
      const wk = get(series, 'warren-fsync', 'backlog', 'killStartSeconds');
      const nk = get(series, n, 'backlog', 'killStartSeconds');
      if (wk !== undefined && nk !== undefined) {
        out.push({ rabbitmq, target: `kill -9 start ≤ 0.5× ${TARGET_TITLE[n]}'s`, figures: `${wk} s vs ${nk} s (${r2(wk / nk)}×)`, met: wk <= 0.5 * nk });
      }
      const wc = get(series, 'warren-fsync', 'backlog', 'cleanStartSeconds');
      const nc = get(series, n, 'backlog', 'cleanStartSeconds');
      if (wc !== undefined && nc !== undefined) {
        out.push({ rabbitmq, target: `clean start ≤ ${TARGET_TITLE[n]}'s`, figures: `${wc} s vs ${nc} s`, met: wc <= nc });
      }
    }
    const loops = sums.filter((s) => s.series === series && s.loopDelay);
    if (loops.length) {
      const worst = loops.reduce((x, y) => (y.loopDelay!.maxOfMaxMs > x.loopDelay!.maxOfMaxMs ? y : x));
      const stalls = loops.filter((s) => s.loopDelay!.stall).map((s) => `${s.target} ${s.row} ${s.loopDelay!.maxOfMaxMs} ms`);
      out.push({
        rabbitmq,
        target: 'no sidecar event-loop stall > 20 ms (every Warren load, every run)',
        figures: `worst ${worst.loopDelay!.maxOfMaxMs} ms (${worst.target} ${worst.row})${stalls.length ? `; over 20 ms: ${stalls.join(', ')}` : ''}`,
        met: stalls.length === 0,
      });
    }
  }
  return out;
}

async function esm<T>(name: string): Promise<T> {
  // vega and vega-lite are ES modules with a top-level await: import(), not require() (which tsc makes of import() under CommonJS)
  return (await (new Function('n', 'return import(n)') as (n: string) => Promise<T>)(name)) as T;
}

async function chart(sums: Summary[], file: string): Promise<void> {
  const vega = await esm<typeof VegaT>('vega');
  const vl = await esm<typeof VegaLiteT>('vega-lite');
  const thr = ROW_METRICS.filter((m) => m.throughput);
  const values = sums
    .filter((s) => thr.some((m) => m.row === s.row))
    .map((s) => ({ version: `RabbitMQ ${s.rabbitmq}`, load: s.row, target: TARGET_TITLE[s.target], value: s.medians.msgPerSec }));
  const spec: VegaLiteT.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Warren vs RabbitMQ classic queues: median msg/s per load (fan-out drain: deliveries/s)',
    data: { values },
    facet: { row: { field: 'version', type: 'nominal', title: null } },
    spec: {
      width: 720,
      height: 220,
      mark: 'bar',
      encoding: {
        x: { field: 'load', type: 'nominal', sort: thr.map((m) => m.row), title: null, axis: { labelAngle: -30 } },
        xOffset: { field: 'target', type: 'nominal', sort: ALL_TARGETS.map((t) => TARGET_TITLE[t]) },
        // (a log scale renders no bars in a faceted chart with renderer 'none')
        y: { field: 'value', type: 'quantitative', title: 'msg/s' },
        color: { field: 'target', type: 'nominal', scale: { domain: ALL_TARGETS.map((t) => TARGET_TITLE[t]) }, title: 'target' },
        tooltip: [{ field: 'target' }, { field: 'load' }, { field: 'value' }],
      },
    },
    config: { background: 'white' },
  };
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  fs.writeFileSync(file, await view.toSVG());
  view.finalize();
}

const fmt = (v: number | undefined, unit: string) => (v === undefined || !Number.isFinite(v) ? '–' : unit.endsWith('/s') && unit !== 'MB/s' ? Math.round(v).toLocaleString('en') : String(v));

function readme(sums: Summary[], crit: Criterion[], meta: Record<string, unknown>, svgName: string, jsonName: string, runs: number): string {
  const lines: string[] = [];
  lines.push('## `npm run bench -- broker` — native classic queues v1 / v2 against Warren-fsync / Warren-write', '');
  lines.push(
    'Written by bench/broker-bench.ts from its own results at every full run (do not edit between the markers).',
    '`npm run bench -- broker [--rabbitmq 3.10,4.0] [--targets v1,v2,warren-fsync,warren-write] [--runs 3] [--backlog 100000] [--scale 1] [--loads …] [--out broker] [--profile] [--no-warmup] [--report-only]`',
    '(`--scale` multiplies the throughput loads\' message counts; `--out` other than `broker` leaves this section alone; `--profile` runs the Warren sidecars under `node --cpu-prof`',
    'through the plugin\'s `node_executable` setting and keeps the profiles of the sidecars that exited cleanly in bench/results/<out>-profiles/; `--report-only` rewrites the chart and this section from the results file).',
    '',
    `Run of ${String(meta.date)} (${String(meta.durationMinutes)} min): ${String(meta.machine)}; ${runs} run${runs === 1 ? '' : 's'} per target, the target order rotated each run, medians shown; ` +
      'the nodes not being measured are stopped' +
      (meta.warmup === true
        ? `; a node, once started, first runs an unmeasured warm-up (${WARMUP.map((w) => `${w.count.toLocaleString('en')} × ${w.bodyBytes / KiB} KiB`).join(' and ')} published with 256 confirms in flight and consumed)`
        : '; every load is measured from the node\'s start on, without a warm-up') +
      '. Persistent messages, durable queues, confirms with exactly W outstanding, consumers with prefetch 256 and an ack each. ' +
      'Durability: 3.10 CQ v1 fsyncs on a timer before confirming; CQ v2 confirms after a plain write; Warren-fsync fsyncs before every confirm; ' +
      'Warren-write confirms once the write reached the kernel and fsyncs every 200 ms. The backlog rows run for v1, v2 and Warren-fsync only ' +
      '(the durability mode does not change recovery). Start times are from the node log ("Starting RabbitMQ" to "Server startup complete"); ' +
      '"wall until N" is from the start call until the queue answers a passive declare with all N messages.',
    '',
    `Brokers: ${((meta.versions as { rabbitmq: string; erlang: string; targets: string[] }[] | undefined) ?? []).map((v) => `RabbitMQ ${v.rabbitmq} (Erlang ${v.erlang}): ${v.targets.join(', ')}`).join('; ')}.`,
    '',
    'Loads of this run:',
    '',
    ...((meta.loads as { id: string; title: string; count: number }[] | undefined) ?? []).map((l) => `- \`${l.id}\`: ${l.title}; ${l.count.toLocaleString('en')} messages`),
    '',
    `Raw lines: [results/${jsonName}](results/${jsonName}). Ratios are Warren's advantage: throughput Warren/native, latency, memory and times native/Warren (above 1: Warren better).`,
    '',
    `![median msg/s per load and target](results/${svgName})`,
    '',
  );
  for (const series of [...new Set(sums.map((s) => s.series))]) {
    const rabbitmq = sums.find((s) => s.series === series)!.rabbitmq;
    const ts = ALL_TARGETS.filter((t) => sums.some((s) => s.series === series && s.target === t));
    const pairs = PAIRS.filter(([w, n]) => ts.includes(w) && ts.includes(n));
    lines.push(`### RabbitMQ ${rabbitmq}`, '');
    lines.push(`| load | ${ts.map((t) => TARGET_TITLE[t]).join(' | ')} | ${pairs.map(([w, n]) => `${w}/${n}`).join(' | ')} |`);
    lines.push(`| --- | ${ts.map(() => '---:').join(' | ')} | ${pairs.map(() => '---:').join(' | ')} |`);
    for (const rm of ROW_METRICS) {
      const vals = ts.map((t) => sums.find((s) => s.series === series && s.target === t && s.row === rm.row)?.medians[rm.metric]);
      if (vals.every((v) => v === undefined)) continue;
      const mb = ts.map((t) => sums.find((s) => s.series === series && s.target === t && s.row === rm.row)?.medians.MBPerSec);
      const big = rm.row.includes('64k');
      const cells = vals.map((v, i) => `${fmt(v, rm.unit)}${big && mb[i] !== undefined ? ` (${mb[i]} MB/s)` : ''}`);
      const rat = pairs.map(([w, n]) => {
        const a = vals[ts.indexOf(w)];
        const b = vals[ts.indexOf(n)];
        const x = a !== undefined && b !== undefined && !rm.noRatio ? advantage(rm, a, b) : null;
        return x === null ? '–' : `${x}×`;
      });
      lines.push(`| ${rm.label} (${rm.unit}) | ${cells.join(' | ')} | ${rat.join(' | ')} |`);
    }
    const withCpu = sums.filter((s) => s.series === series && s.cpu && ROW_METRICS.some((m) => m.row === s.row && m.throughput));
    if (withCpu.length) {
      lines.push(
        '',
        'CPU per message of each throughput load (µs of CPU per message, or per delivery for fanout3-drain; medians of the runs): the broker\'s VM + the sidecar = the store\'s side, ' +
          'then the load generator; in brackets the same as % of one core over the load (2 cores in all, shared by every process). From /proc/<pid>/stat between the start and the end of the measured part.',
        '',
      );
      lines.push(`| load | ${ts.map((t) => TARGET_TITLE[t]).join(' | ')} |`, `| --- | ${ts.map(() => '---').join(' | ')} |`);
      for (const row of [...new Set(withCpu.map((s) => s.row))]) {
        const cells = ts.map((t) => {
          const sm = withCpu.find((s) => s.target === t && s.row === row);
          const rate = sm?.medians.msgPerSec;
          if (!sm?.cpu || !rate) return '–';
          const us = (pct: number) => Math.round((pct / 100 / rate) * 1e6);
          const store = sm.cpu.sidecarPct !== undefined ? `${us(sm.cpu.vmPct)} + ${us(sm.cpu.sidecarPct)} = ${us(sm.cpu.vmPct + sm.cpu.sidecarPct)}` : `${us(sm.cpu.vmPct)}`;
          const pcts = sm.cpu.sidecarPct !== undefined ? `${sm.cpu.vmPct}% + ${sm.cpu.sidecarPct}%` : `${sm.cpu.vmPct}%`;
          return `${store}; client ${us(sm.cpu.clientPct)} (${pcts}; ${sm.cpu.clientPct}%)`;
        });
        lines.push(`| ${row} | ${cells.join(' | ')} |`);
      }
    }
    const loops = sums.filter((s) => s.series === series && s.loopDelay);
    if (loops.length) {
      lines.push(
        '',
        'Sidecar event-loop delay per load (p99 median of the runs / worst max, ms; in brackets the longest GC pause of the main thread in any run, ' +
          'then the main thread\'s time on a CPU and runnable but waiting for one, % of the load, medians; from /proc/<pid>/task/<pid>/schedstat):',
        '',
      );
      lines.push(`| load | ${ts.filter(isWarren).map((t) => TARGET_TITLE[t]).join(' | ')} |`, `| --- | ${ts.filter(isWarren).map(() => '---:').join(' | ')} |`);
      for (const row of [...new Set(loops.map((s) => s.row))]) {
        const cells = ts.filter(isWarren).map((t) => {
          const sm = loops.find((s) => s.target === t && s.row === row);
          const l = sm?.loopDelay;
          const c = sm?.cpu;
          const sched = c?.sidecarMainRunPct !== undefined ? `; ran ${c.sidecarMainRunPct}%, waited ${c.sidecarMainWaitPct}%` : '';
          const gc = l?.gcMaxOfMaxMs !== undefined ? `GC ${l.gcMaxOfMaxMs}` : '';
          const brackets = gc || sched ? ` (${gc}${gc ? sched : sched.slice(2)})` : '';
          return l ? `${median(l.p99Ms)} / ${l.maxOfMaxMs}${l.stall ? ' **> 20**' : ''}${brackets}` : '–';
        });
        lines.push(`| ${row} | ${cells.join(' | ')} |`);
      }
    }
    lines.push('');
  }
  lines.push('### Targets from the issue', '', '| RabbitMQ | target | figures (medians) | met |', '| --- | --- | --- | --- |');
  for (const c of crit) lines.push(`| ${c.rabbitmq} | ${c.target} | ${c.figures} | ${c.met === null ? '–' : c.met ? '**met**' : 'not met'} |`);
  lines.push('');
  return lines.join('\n');
}


/** --report-only: the chart and README section again from bench/results/<out>.json (after a change to the report code). */
async function reportOnly(): Promise<void> {
  const resultsDir = path.resolve(__dirname, '../../bench/results');
  const lines = fs
    .readFileSync(path.join(resultsDir, `${outName}.json`), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const meta = lines.find((l) => l.bench === 'meta')!;
  const sums = lines.filter((l) => l.bench === 'broker') as unknown as Summary[];
  const crit = criteria(sums);
  await chart(sums, path.join(resultsDir, `${outName}.svg`));
  if (outName === 'broker') refreshReadmeSection('broker', readme(sums, crit, meta, `${outName}.svg`, `${outName}.json`, Number(meta.runs)), '## `npm run bench -- broker`');
  log(`bench/results/${outName}.svg${outName === 'broker' ? ' and bench/README.md' : ''} written from bench/results/${outName}.json`);
}

async function main(): Promise<void> {
  if (args.includes('--report-only')) return reportOnly();
  const t0 = Date.now();
  const samples: Sample[] = [];
  const versionsMeta: Record<string, unknown>[] = [];
  const versions = new Map<string, string>();
  for (const s of seriesList) versions.set(s, runtimeFor(s).version);
  const resultsDir = path.resolve(__dirname, '../../bench/results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const cpu = os.cpus();
  const machine = `${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, load average at start ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`;
  const write = (done: boolean) => {
    const sums = summarize(samples, versions);
    const crit = criteria(sums);
    const meta = {
      bench: 'meta',
      suite: 'broker',
      date: new Date(t0).toISOString(),
      complete: done,
      durationMinutes: Math.round((Date.now() - t0) / 6000) / 10,
      machine,
      node: process.version,
      versions: versionsMeta,
      targets: targetsWanted,
      runs,
      scale,
      profile,
      warmup,
      idleNodes: 'stopped: only the node of the target being measured runs (native v1 and v2 share one native node)',
      loads: loads.map((l) => ({ id: l.id, rows: l.rows, title: l.title, bodyBytes: l.bodyBytes, count: l.count, window: l.window, only: l.only })),
      durability: {
        v1: 'RabbitMQ 3.10 classic queue v1: fsyncs on a timer before confirming',
        v2: 'classic queue v2: confirms after a plain write',
        'warren-fsync': 'Warren default: fsyncs before every confirm',
        'warren-write': 'Warren --durability write: confirms once the write reached the kernel, fsyncs every 200 ms',
        backlog: 'the backlog load runs for v1, v2 and Warren-fsync only: the durability mode does not change recovery',
      },
      notes: {
        ratios: "broker-ratio lines give Warren's advantage: throughput warren/native; latency (p50/p99/max), RSS and start times inverted (native/warren); above 1 means Warren is better",
        pubsub: 'pubsub-1k msgPerSec = messages that went through both ends (published, confirmed and consumed) / time from the first publish to the last of both',
        latency: 'latency-3000: each publish timestamped, latency until its confirm callback; achieved publish and confirm rates given',
        startTimes: 'cleanStartSeconds / killStartSeconds: node log "Starting RabbitMQ" to "Server startup complete"; *WallSeconds: from Broker.start() until a passive declare reports all N messages',
        loopDelay: 'Warren rows: loopDelay = the sidecar event loop delay (rabbit_warren_sidecar:stats() eventLoopDelay) read just before and right after the load; stall = a max over 20 ms',
      },
    };
    const lines = [meta, ...sums.map((s) => ({ bench: 'broker', ...s })), ...ratios(sums), ...crit.map((c) => ({ bench: 'broker-target', ...c }))];
    fs.writeFileSync(path.join(resultsDir, `${outName}.json`), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    return { sums, crit, meta };
  };
  try {
    for (const series of seriesList) {
      await runVersion(series, samples, versionsMeta);
      write(false);
    }
  } finally {
    await cleanup();
  }
  const { sums, crit, meta } = write(true);
  await chart(sums, path.join(resultsDir, `${outName}.svg`));
  if (outName === 'broker') refreshReadmeSection('broker', readme(sums, crit, meta, `${outName}.svg`, `${outName}.json`, runs), '## `npm run bench -- broker`');
  log(`done in ${meta.durationMinutes} min; bench/results/${outName}.json, ${outName}.svg${outName === 'broker' ? ', bench/README.md' : ''}`);
  for (const c of crit) log(`target ${c.rabbitmq}: ${c.target}: ${c.figures} — ${c.met ? 'met' : 'not met'}`);
}

main().catch((e: Error) => {
  if (!interrupted) process.stderr.write(`${e.stack ?? e.message}\n`);
  void cleanup().finally(() => process.exit(interrupted ? 130 : 1));
});
