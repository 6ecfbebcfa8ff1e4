/**
 * The `warren` command as an operator uses it, on a node `warren start` runs
 * (its own data dir and ports, this run's RabbitMQ series): `ctl` and `stats`
 * reach the running node; `verify` and `compact` refuse its store while the
 * sidecar has it open; after Ctrl-C, `verify` finds the data sound, `inspect`
 * counts the messages, `compact` reclaims the drained queue's garbage, and
 * the next start gives every message back. A flipped bit in a copy is
 * reported with its file and offset, and verify exits 1.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { scanSegment } from '../src/store';
import { Run, WarrenNode, WarrenSetup, startNode as startWarren, stopNode, warren as run, warrenSetup } from './warren-start';

const N = 600;
const BODY = 2048;
const LIMIT = 256 * 1024;
const KEPT = `cli-kept-${process.pid}`;
const DRAINED = `cli-drained-${process.pid}`;
const bodyOf = (q: string, i: number): Buffer => Buffer.concat([Buffer.from(`${q}:${i}|`), Buffer.alloc(BODY - `${q}:${i}|`.length, i & 0xff)]);

jest.setTimeout(300_000);

let setup: WarrenSetup;
let base: string;
let dataDir: string;
let url: string;

const warren = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Run> => run(setup.env, args, extraEnv);
const startNode = (): Promise<WarrenNode> => startWarren(setup.env);

async function publish(q: string, from: number, to: number): Promise<void> {
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(q, { durable: true });
  for (let i = from; i < to; i++) ch.sendToQueue(q, bodyOf(q, i), { persistent: true });
  await ch.waitForConfirms();
  await conn.close();
}

/** Consumes and acks every message of `q`; resolves with their bodies in order. */
async function drain(q: string, n: number): Promise<Buffer[]> {
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  await ch.prefetch(256);
  const got: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} messages came from ${q}`)), 120_000);
    void ch.consume(q, (m) => {
      if (!m) return;
      got.push(m.content);
      ch.ack(m);
      if (got.length === n) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await ch.close();
  await conn.close();
  return got;
}

beforeAll(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-cli-'));
  dataDir = path.join(base, 'var');
  setup = await warrenSetup(dataDir, 'warren-cli', { WARREN_SIDECAR_ARGS: `--file-size-limit ${LIMIT}` });
  url = setup.amqpUrl;
});

afterAll(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

it('runs a node that ctl and stats reach, whose store the offline tools refuse while it runs, and whose data they verify, inspect and compact once stopped', async () => {
  const node = await startNode();
  let stopped = false;
  try {
    // interleaved, so that the drained queue's records share files with the kept one's
    for (let i = 0; i < N; i += 100) {
      await publish(KEPT, i, i + 100);
      await publish(DRAINED, i, i + 100);
    }
    expect((await drain(DRAINED, N)).length).toBe(N);

    const ls = await warren(['ctl', 'list_queues', '-q', '--no-table-headers', 'name', 'messages']);
    expect(ls.code).toBe(0);
    const rows = new Map(ls.stdout.trim().split('\n').map((l) => l.split('\t') as [string, string]));
    expect(rows.get(KEPT)).toBe(String(N));
    expect(rows.get(DRAINED)).toBe('0');
    // rabbitmqctl's own failure status is passed on
    expect((await warren(['ctl', 'no_such_command'])).code).not.toBe(0);

    const st = await warren(['stats', '--json']);
    expect(st.code).toBe(0);
    const figures = JSON.parse(st.stdout) as { pid: number; vhosts: Record<string, { store: { messages: number; indexKind: string }; queues: Record<string, { len: number }> }> };
    expect(figures.vhosts['/'].store.messages).toBe(N);
    expect(figures.vhosts['/'].queues[KEPT].len).toBe(N);
    expect(figures.vhosts['/'].queues[DRAINED].len).toBe(0);

    // the sidecar's Prometheus endpoint, which `warren start` turns on, says the same
    const scrape = await fetch(`http://127.0.0.1:${setup.metricsPort}/metrics`);
    expect(scrape.status).toBe(200);
    const metrics = await scrape.text();
    const sample = (name: string, labels: string): number => {
      const line = metrics.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
      if (line === undefined) throw new Error(`no sample ${name}{${labels}} in the scrape:\n${metrics}`);
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    expect(sample('warren_queue_messages_ready', `vhost="/",queue="${KEPT}"`)).toBe(N);
    expect(sample('warren_queue_messages_ready', `vhost="/",queue="${DRAINED}"`)).toBe(0);
    expect(sample('warren_store_messages', 'vhost="/"')).toBe(N);
    expect(sample('warren_store_writes_total', 'vhost="/"')).toBe(2 * N);

    for (const cmd of ['verify', 'compact']) {
      const r = await warren([cmd, dataDir]);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(new RegExp(`${cmd} refused: vhost "/" .* is in use by the sidecar pid ${figures.pid}; stop the broker first`));
    }
    const live = await warren(['inspect', '--json', '-q', dataDir]);
    expect(live.code).toBe(0);
    expect((JSON.parse(live.stdout) as { vhosts: { inUseBy: number | null }[] }).vhosts[0].inUseBy).toBe(figures.pid);

    const stop = await stopNode(node);
    stopped = true;
    expect(stop.code).toBe(0);
    expect(stop.output).toContain('stopped cleanly');
  } finally {
    if (!stopped) await stopNode(node);
  }

  // stopped: sound, every message counted, the clean state trusted
  const v = await warren(['verify', '--json', '-q', dataDir]);
  expect(v.code).toBe(0);
  const vr = JSON.parse(v.stdout) as { sound: boolean; vhosts: { problems: unknown[]; figures: { queueMessages: number } }[] };
  expect(vr.sound).toBe(true);
  expect(vr.vhosts).toHaveLength(1);
  expect(vr.vhosts[0].problems).toEqual([]);
  expect(vr.vhosts[0].figures.queueMessages).toBe(N);

  type Inspected = { vhosts: { vhost: string; dir: string; inUseBy: number | null; cleanState: { store: boolean }; queues: { name?: string; messages: number; bytes: number }[]; store: { files: { file: number }[]; totals: { bytes: number; validBytes: number; garbageBytes: number } } }[] };
  const ins = await warren(['inspect', '--json', '-q', dataDir]);
  expect(ins.code).toBe(0);
  const before = (JSON.parse(ins.stdout) as Inspected).vhosts[0];
  expect(before.vhost).toBe('/');
  expect(before.inUseBy).toBeNull();
  expect(before.cleanState.store).toBe(true);
  expect(before.queues.map((q) => q.messages).sort((a, b) => a - b)).toEqual([0, N]);
  // each queue index names its queue (the sidecar records the name at INIT)
  expect(Object.fromEntries(before.queues.map((q) => [q.name, q.messages]))).toEqual({ [KEPT]: N, [DRAINED]: 0 });
  expect(before.queues.find((q) => q.name === KEPT)!.bytes).toBe(N * BODY);
  expect(before.store.totals.garbageBytes).toBeGreaterThan(0);
  const text = await warren(['inspect', '-q', dataDir]);
  expect(text.stdout).toContain('vhost "/"');
  expect(text.stdout).toContain(JSON.stringify(KEPT));

  // a copy with one flipped bit in a live record: not sound, the record named by file and offset
  const copy = path.join(base, 'flipped');
  fs.cpSync(dataDir, copy, { recursive: true });
  const warrenCopy = path.join(copy, path.relative(dataDir, before.dir)); // the vhost's warren/ dir
  const vhostCopy = path.dirname(warrenCopy);
  const storeCopy = path.join(warrenCopy, 'store');
  const fileNo = before.store.files[0].file;
  const segFile = path.join(storeCopy, `${fileNo}.rdq`);
  const rec = (await scanSegment(segFile)).records.find((r) => r.totalSize > 100)!;
  const fd = fs.openSync(segFile, 'r+');
  const byte = Buffer.alloc(1);
  fs.readSync(fd, byte, 0, 1, rec.offset + 60);
  byte[0] ^= 0x01;
  fs.writeSync(fd, byte, 0, 1, rec.offset + 60);
  fs.closeSync(fd);
  const bad = await warren(['verify', '-q', vhostCopy]);
  expect(bad.code).toBe(1);
  expect(bad.stdout).toContain(`${segFile} @${rec.offset}`);
  expect(bad.stdout).toContain('NOT SOUND');

  // offline compaction reclaims the drained queue's share of the files
  const c = await warren(['compact', '--json', '-q', '--file-size-limit', String(LIMIT), dataDir]);
  expect(c.code).toBe(0);
  const cr = (JSON.parse(c.stdout) as { vhosts: { opened: string; compactions: number; reclaimedBytes: number; after: { validBytes: number } }[] }).vhosts[0];
  expect(cr.opened).toBe('clean');
  expect(cr.compactions).toBeGreaterThan(0);
  expect(cr.reclaimedBytes).toBeGreaterThan(0);
  expect(cr.after.validBytes).toBe(before.store.totals.validBytes);
  expect((await warren(['verify', '-q', dataDir])).code).toBe(0);

  // and the node starts on the compacted store and gives back every message, in order
  const again = await startNode();
  try {
    const bodies = await drain(KEPT, N);
    bodies.forEach((b, i) => expect(b.equals(bodyOf(KEPT, i))).toBe(true));
    expect(again.output()).not.toMatch(/error/i);
  } finally {
    expect((await stopNode(again)).code).toBe(0);
  }
});

it('names bad input with exit status 2', async () => {
  const missing = await warren(['verify', path.join(base, 'no-such-dir')]);
  expect(missing.code).toBe(2);
  expect(missing.stderr).toMatch(/no-such-dir/);
  const empty = fs.mkdtempSync(path.join(base, 'empty-'));
  const none = await warren(['inspect', empty]);
  expect(none.code).toBe(2);
  expect(none.stderr).toMatch(/holds no Warren data/);
  expect((await warren(['compact', '--file-size-limit', 'lots', dataDir])).code).toBe(2);
  expect((await warren(['no-such-command'])).code).toBe(2);
  const noNode = await warren(['stats'], { WARREN_DATA: empty });
  expect(noNode.code).toBe(2);
  expect(noNode.stderr).toMatch(/warren-node\.json does not exist/);
});
