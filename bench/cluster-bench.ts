/**
 * `npm run bench -- cluster [--rabbitmq 4.0,3.10] [--runs 3] [--messages 20000] [--window 256] [--body 1024]`
 *
 * Aggregate publish-confirm rate with 3 durable classic queues spread over a
 * 3-node cluster (queue i on node i, its publisher connected to node i)
 * against the same 3 queues on 1 node, Warren against native RabbitMQ
 * (classic queues v2), in the same run: each topology and store is a cluster
 * of its own (cluster.ts), started once, and the runs alternate between them.
 * Every publisher keeps `window` confirms outstanding and sends `messages`
 * persistent messages of `body` bytes; the aggregate rate is all messages
 * over the slowest publisher's time. Medians of the runs go to
 * bench/results/cluster.json and a table in bench/README.md.
 *
 * All nodes share this machine's cores: on 2 cores, 3 nodes cannot go faster
 * than 1 (they divide the same CPU); the figure says what a cluster costs or
 * gains here, not what it gains on 3 machines.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Cluster } from '../src/cli/cluster';
import { freePort } from '../src/cli/ports';
import { runtimeFor } from '../src/cli/rabbitmq';
import { refreshReadmeSection } from './readme-section';
import { option, positiveOption } from './options';
import { publishWindow } from './amqp-load';


const QUEUES = 3;
const runs = positiveOption('runs', 3, true);
const messages = positiveOption('messages', 20_000, true);
const window = positiveOption('window', 256, true);
const bodyBytes = positiveOption('body', 1024, true);
const seriesList = (option('rabbitmq') ?? '4.0,3.10').split(',');

type Store = 'native' | 'warren';
interface Setup {
  store: Store;
  nodes: 1 | 3;
  cluster: Cluster;
}
interface Sample {
  rabbitmq: string;
  store: Store;
  nodes: number;
  run: number;
  msgPerSec: number;
}

const dirs: string[] = [];

async function makeCluster(series: string, store: Store, nodes: 1 | 3): Promise<Setup> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `warren-cluster-bench-${store}-${nodes}-`));
  dirs.push(dir);
  const ports = [];
  for (let i = 0; i < nodes; i++) ports.push({ amqpPort: await freePort(), distPort: await freePort() });
  const cluster = new Cluster({ dir, rabbitmq: series as '4.0', ports, epmdPort: await freePort(), namePrefix: `cb-${store}${nodes}-${process.pid}`, warren: store === 'warren', sidecarArgs: [] });
  await cluster.start();
  return { store, nodes, cluster };
}

/** One run: a fresh queue per publisher (queue i on node i mod nodes), all publishing at once. */
async function runOnce(s: Setup, run: number): Promise<number> {
  const content = Buffer.alloc(bodyBytes, 0x61);
  const conns: amqp.ChannelModel[] = [];
  try {
    const chans: { ch: amqp.ConfirmChannel; q: string }[] = [];
    for (let i = 0; i < QUEUES; i++) {
      const node = i % s.nodes;
      const c = await amqp.connect(s.cluster.amqpUrl(node));
      conns.push(c);
      const ch = await c.createConfirmChannel();
      const q = `cb-${run}-${i}`;
      await ch.assertQueue(q, { durable: true, arguments: { 'x-queue-version': 2 } });
      chans.push({ ch, q });
    }
    const times = await Promise.all(chans.map(({ ch, q }) => publishWindow(ch, '', q, content, messages, window)));
    for (const { ch, q } of chans) await ch.deleteQueue(q);
    return (QUEUES * messages) / Math.max(...times);
  } finally {
    for (const c of conns) await c.close().catch(() => undefined);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function readmeSection(rows: { rabbitmq: string; store: Store; nodes: number; median: number }[], meta: Record<string, unknown>): string {
  const get = (v: string, st: Store, n: number) => rows.find((r) => r.rabbitmq === v && r.store === st && r.nodes === n)?.median ?? NaN;
  const f = (x: number) => Math.round(x).toLocaleString('en-US');
  const lines = [
    `Run of ${String(meta.date)} (${String(meta.cpus)} cores, commit ${String(meta.commit)}): ${QUEUES} durable classic queues, each with one publisher keeping ${window} confirms outstanding, ${messages.toLocaleString('en-US')} persistent messages of ${bodyBytes} B each; aggregate msg/s (all messages over the slowest publisher's time), median of ${runs} runs. 3 nodes: queue i and its publisher on node i; 1 node: all three there. Native is RabbitMQ's classic queue v2. Durability is not equal: Warren fsyncs before every confirm; 3.10's CQ v2 confirms after a plain write (the broker section above; Warren's \`durability: write\` would be the like for like there).`,
    '',
    '| RabbitMQ | store | 1 node | 3 nodes | 3 nodes / 1 node |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const v of [...new Set(rows.map((r) => r.rabbitmq))]) {
    for (const st of ['native', 'warren'] as Store[]) {
      const one = get(v, st, 1);
      const three = get(v, st, 3);
      lines.push(`| ${v} | ${st === 'native' ? 'native CQ v2' : 'Warren'} | ${f(one)} | ${f(three)} | ${(three / one).toFixed(2)} |`);
    }
    lines.push(`| ${v} | Warren / native | ${(get(v, 'warren', 1) / get(v, 'native', 1)).toFixed(2)} | ${(get(v, 'warren', 3) / get(v, 'native', 3)).toFixed(2)} | |`);
  }
  lines.push('', 'The nodes of a cluster share this machine\'s 2 cores: 3 nodes divide the CPU that 1 node has alone, so the 3-node figures say what clustering costs here, not what it gains across machines.', '');
  return lines.join('\n');
}


async function main(): Promise<void> {
  const { execFileSync } = await import('child_process');
  const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  const meta = { bench: 'meta', date: new Date().toISOString(), cpus: os.cpus().length, commit, runs, messages, window, bodyBytes, queues: QUEUES };
  const lines = [JSON.stringify(meta)];
  process.stdout.write(lines[0] + '\n');
  const samples: Sample[] = [];
  for (const series of seriesList) {
    const rt = runtimeFor(series);
    const setups: Setup[] = [];
    try {
      for (const store of ['native', 'warren'] as Store[]) for (const nodes of [1, 3] as const) setups.push(await makeCluster(rt.series, store, nodes));
      for (let run = 0; run < runs; run++) {
        // rotate the order so no setup always goes first
        const order = setups.map((_, k) => setups[(k + run) % setups.length]);
        for (const s of order) {
          const msgPerSec = await runOnce(s, run);
          const sample: Sample = { rabbitmq: rt.version, store: s.store, nodes: s.nodes, run, msgPerSec: Math.round(msgPerSec) };
          samples.push(sample);
          const line = JSON.stringify({ bench: 'cluster', ...sample });
          lines.push(line);
          process.stdout.write(line + '\n');
        }
      }
    } finally {
      for (const s of setups) await s.cluster.stop().catch(() => s.cluster.kill());
    }
  }
  const rows: { rabbitmq: string; store: Store; nodes: number; median: number }[] = [];
  for (const v of [...new Set(samples.map((s) => s.rabbitmq))]) {
    for (const store of ['native', 'warren'] as Store[]) {
      for (const nodes of [1, 3]) {
        const xs = samples.filter((s) => s.rabbitmq === v && s.store === store && s.nodes === nodes).map((s) => s.msgPerSec);
        const row = { rabbitmq: v, store, nodes, median: median(xs) };
        rows.push(row);
        lines.push(JSON.stringify({ bench: 'cluster-median', ...row }));
      }
    }
  }
  const out = path.resolve(__dirname, '../../bench/results/cluster.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, lines.join('\n') + '\n');
  refreshReadmeSection('cluster', readmeSection(rows, meta), '## Cluster: publish-confirm over 3 nodes against 1 (`npm run bench -- cluster`)');
  process.stdout.write(`written to ${path.relative(process.cwd(), out)} and bench/README.md\n`);
}

main()
  .catch((e: Error) => {
    process.stderr.write(`${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });
