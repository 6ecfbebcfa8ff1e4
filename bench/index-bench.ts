/**
 * Index benchmarks (issue: LevelDB-backed message index). Each case runs in a
 * child process of its own (node --expose-gc) so that memory figures are not
 * mixed; results are JSON lines on stdout and in bench/results/index.json.
 *
 *   npm run bench -- index [--entries 5000000] [--messages 1000000] [--cases rss,throughput,backlog,restart] [--out index]
 *
 * Cases, each for the memory and the LevelDB index in the same run:
 *   rss         resident set size after a forced GC with N live index entries
 *   throughput  write + sync + read + remove of M 1 KiB messages through the store,
 *               1,000 at a time (a queue whose consumers keep up)
 *   backlog     write + sync of M 1 KiB messages, then read + remove of all of
 *               them (a queue that fills before it drains: every entry goes
 *               through LevelDB); the fill rate and the RSS after a GC with all
 *               M stored are reported on their own
 *   restart     time to open a cleanly closed store holding N tiny messages
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MessageStore, StoreClient, resolveIndex } from '../src/store';
import { LevelDbIndex } from '../src/index/leveldb';
import { numberOption, runChildren, runIfChild } from './children';

interface Result {
  bench: string;
  index: string;
  [k: string]: string | number;
}

const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0x57524e00, 0);
  b.writeUIntBE(n, 10, 6);
  return b;
};
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'warren-bench-'));
const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

async function rss(index: string, n: number): Promise<Result> {
  const dir = tmp();
  try {
    const { index: ix } = await resolveIndex(index).open(dir, false);
    for (let i = 0; i < n; i++) {
      ix.insert(id(i), { refCount: 1, file: Math.floor(i / 100_000), offset: (i % 100_000) * 40, totalSize: 40 });
      if (i % 10_000 === 9_999) await ix.flush();
    }
    await ix.flush();
    gc();
    await new Promise((r) => setTimeout(r, 200));
    gc();
    const m = process.memoryUsage();
    const extra: Record<string, number> = ix instanceof LevelDbIndex ? { bloomMB: mb(ix.stats().bloomBytes) } : {};
    await ix.terminate();
    return { bench: 'rss', index, entries: n, rssMB: mb(m.rss), heapUsedMB: mb(m.heapUsed), externalMB: mb(m.external + m.arrayBuffers), ...extra };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** 1 KiB bodies, 1,000 ids a batch: the shape of the throughput cases. */
const BODY = Buffer.alloc(1024, 7);
const BATCH = 1000;
const idBatch = (b: number, n: number) => Array.from({ length: Math.min(BATCH, n - b) }, (_, i) => id(b + i));

/** Runs `fn` with a fresh store in a temporary directory, closed and removed afterwards. */
async function withFreshStore<T>(index: string, fn: (store: MessageStore, c: StoreClient) => Promise<T>): Promise<T> {
  const dir = tmp();
  try {
    const store = await MessageStore.open({ dir, index, clientRefs: undefined });
    const r = await fn(store, store.client('bench'));
    await store.close();
    return r;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function throughput(index: string, n: number): Promise<Result> {
  const secs = await withFreshStore(index, async (store, c) => {
    const t0 = process.hrtime.bigint();
    for (let b = 0; b < n; b += BATCH) {
      const ids = idBatch(b, n);
      for (const x of ids) c.write(x, BODY);
      await c.sync(ids);
      for (const x of ids) if (!(await c.read(x))) throw new Error('lost a message');
      c.remove(ids);
    }
    await store.quiesce();
    return Number(process.hrtime.bigint() - t0) / 1e9;
  });
  return { bench: 'throughput', index, messages: n, seconds: Math.round(secs * 100) / 100, msgsPerSec: Math.round(n / secs) };
}

async function backlog(index: string, n: number): Promise<Result> {
  let fullRss = 0;
  const [t0, t1, t2] = await withFreshStore(index, async (store, c) => {
    const start = process.hrtime.bigint();
    for (let b = 0; b < n; b += BATCH) {
      const ids = idBatch(b, n);
      for (const x of ids) c.write(x, BODY);
      await c.sync(ids);
    }
    const filled = process.hrtime.bigint();
    // Outside the timed phases: the process holding all n, after a GC.
    gc();
    fullRss = process.memoryUsage().rss;
    const drainFrom = process.hrtime.bigint();
    for (let b = 0; b < n; b += BATCH) {
      const ids = idBatch(b, n);
      const bodies = await Promise.all(ids.map((x) => c.read(x)));
      if (bodies.some((x) => !x)) throw new Error('lost a message');
      c.remove(ids);
    }
    await store.quiesce();
    return [start, filled, process.hrtime.bigint() - (drainFrom - filled)];
  });
  const secs = Number(t2 - t0) / 1e9;
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    bench: 'backlog',
    index,
    messages: n,
    seconds: r2(secs),
    msgsPerSec: Math.round(n / secs),
    fillSeconds: r2(Number(t1 - t0) / 1e9),
    fillMsgsPerSec: Math.round(n / (Number(t1 - t0) / 1e9)),
    rssFullMB: mb(fullRss),
    drainSeconds: r2(Number(t2 - t1) / 1e9),
  };
}

async function restart(index: string, n: number): Promise<Result> {
  const dir = tmp();
  try {
    let store = await MessageStore.open({ dir, index, clientRefs: undefined, fileSizeLimit: 64 * 1024 * 1024 });
    const c = store.client('bench');
    const body = Buffer.alloc(8, 1);
    for (let i = 0; i < n; i++) {
      c.write(id(i), body);
      if (i % 50_000 === 49_999) await store.quiesce();
    }
    await store.close();
    gc();
    const t0 = process.hrtime.bigint();
    store = await MessageStore.open({ dir, index, clientRefs: ['bench'], fileSizeLimit: 64 * 1024 * 1024 });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const clean = store.successfullyRecovered;
    await store.close();
    return { bench: 'restart', index, messages: n, openSeconds: Math.round(secs * 1000) / 1000, clean: String(clean) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function child(kind: string, index: string, n: number): Promise<void> {
  const cases: Record<string, (index: string, n: number) => Promise<Result>> = { rss, throughput, backlog, restart };
  const r = await cases[kind](index, n);
  process.stdout.write(JSON.stringify(r) + '\n');
}

function main(): void {
  const args = process.argv.slice(2);
  if (runIfChild(args, ([kind, index, n]) => child(kind, index, Number(n)))) return;
  const entries = numberOption(args, 'entries', 5_000_000);
  const messages = numberOption(args, 'messages', 1_000_000);
  const ci = args.indexOf('--cases');
  const wanted = ci >= 0 ? args[ci + 1].split(',') : ['rss', 'throughput', 'backlog', 'restart'];
  const sizes: Record<string, number> = { rss: entries, throughput: messages, backlog: messages, restart: entries };
  const children: string[][] = [];
  for (const kind of wanted) {
    const n = sizes[kind];
    if (n === undefined) throw new Error(`unknown case ${kind}; cases: ${Object.keys(sizes).join(',')}`);
    for (const index of ['memory', 'leveldb']) children.push([kind, index, String(n)]);
  }
  const oi = args.indexOf('--out');
  const out = oi >= 0 ? args[oi + 1] : 'index';
  runChildren(out, __filename, ['--expose-gc', '--max-old-space-size=8192'], children, 'shared 2-core machine; figures from one run');
}

main();
