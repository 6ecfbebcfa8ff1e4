/**
 * The sidecar's socket server driven over a real Unix socket, as the Erlang
 * plugin drives it: malformed frames close only that connection; queues keep
 * their messages across a clean shutdown; confirms arrive after publishes;
 * and the link is the broker's alone (token, per-connection handles, vhost
 * directories under the data dir, frame limits, no new queue over old state).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as crypto from 'crypto';
import sinon from 'sinon';
import { Client, KEY, TOKEN, fetch, initQueue, publish, readEntries, startVhost, writePublish } from './client';
import type { SidecarConfig } from '../../src/sidecar/config';
import { Writer } from '../../src/sidecar/frames';
import { Op, TOKEN_BYTES } from '../../src/sidecar/protocol';
import { setLogLevel } from '../../src/sidecar/log';
import { SidecarServer } from '../../src/sidecar/server';
import { BackingQueue } from '../../src/queue/backing-queue';
import { turnBudgetEach, turnCounter } from '../turns';

setLogLevel('error');

let dir: string;
let server: SidecarServer;
let sock: string;
let shutdowns = 0;

/** A sidecar on `sock` for the data dir `dir`, as the plugin starts it. */
async function newServer(extra: Partial<SidecarConfig> = {}): Promise<SidecarServer> {
  const s = new SidecarServer(
    { socket: sock, dataDir: dir, maxFrame: 1 << 20, index: 'memory', fileSizeLimit: 1 << 20, syncIntervalMs: 2, durability: 'fsync', writeSyncIntervalMs: 200, logLevel: 'error', ...extra },
    TOKEN,
    () => shutdowns++,
  );
  await s.listen();
  return s;
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-sc-'));
  sock = path.join(dir, 'run', 's.sock');
  server = await newServer();
});

afterEach(async () => {
  await server.shutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

const vdir = () => path.join(dir, 'msg_stores', 'vhosts', 'VHOST1');

const start = (c: Client, keys: string[], legacy: string[] = keys, at = vdir()) => startVhost(c, at, keys, legacy);
const init = (c: Client, recover: number) => initQueue(c, vdir(), recover);

/** A connection to a vhost started with no queues, and a new durable queue 'q' on it. */
async function newQueue(): Promise<{ c: Client; q: Awaited<ReturnType<typeof init>> }> {
  const c = await Client.connect(sock);
  expect(await start(c, [])).toEqual([]);
  return { c, q: await init(c, 0) };
}

/** Stops queue `handle` and the sidecar cleanly, starts a new sidecar (with `extra`) and recovers the queue from its clean state. */
async function restartClean(c: Client, handle: number, extra: Partial<SidecarConfig> = {}): Promise<{ c: Client; again: Awaited<ReturnType<typeof init>> }> {
  await c.call(Op.TERMINATE, (w) => w.u32(handle));
  c.sock.destroy();
  await server.shutdown();
  server = await newServer(extra);
  const c2 = await Client.connect(sock);
  expect(await start(c2, [KEY])).toEqual([1]);
  return { c: c2, again: await init(c2, 1) };
}

it('closes only the offending connection on a malformed frame, and keeps serving', async () => {
  const bad = await Client.connect(sock);
  bad.sock.write(new Writer().u8(200).u32(1).finish(true));
  await bad.closed;
  const good = await Client.connect(sock);
  expect(await start(good, [])).toEqual([]);
  good.sock.destroy();
});

it('reports an unknown handle as an error reply, not a crash', async () => {
  const c = await Client.connect(sock);
  await expect(c.call(Op.FETCH, (w) => w.u32(999).u32(1).u8(1).u8(1))).rejects.toThrow(/unknown queue handle 999/);
  c.sock.destroy();
});

it('confirms persistent publishes, keeps them across a clean restart, and redelivers delivered ones', async () => {
  const { c, q } = await newQueue();
  expect(q).toMatchObject({ len: 0, nextSeq: 0 });
  publish(c, q.handle, [0, 1, 2, 3], 1 | 2, [1, 3]); // persistent, needs confirming
  for (let i = 0; i < 200 && c.confirms.length < 4; i++) await new Promise((r) => setTimeout(r, 5));
  expect(c.confirms.map((b) => b[0]).sort()).toEqual([0, 1, 2, 3]);
  expect(await fetch(c, q.handle, true)).toEqual({ seq: 0, flags: 1, deliveryCount: 0, body: 'body-0' });
  expect(await fetch(c, q.handle, false)).toEqual({ seq: 1, flags: 1, deliveryCount: 0, body: 'body-1' });

  const { c: c2, again } = await restartClean(c, q.handle);
  // Ready with an expiry: seq 3 (seq 1 was fetched without ack), told without a scan.
  expect(again).toMatchObject({ len: 3, pcount: 3, nextSeq: 4, expiring: 1 });
  expect(await fetch(c2, again.handle, true)).toEqual({ seq: 0, flags: 1 | 4, deliveryCount: 0, body: 'body-0' });
  expect(await fetch(c2, again.handle, true)).toEqual({ seq: 2, flags: 1, deliveryCount: 0, body: 'body-2' });
  expect(await fetch(c2, again.handle, true)).toEqual({ seq: 3, flags: 1, deliveryCount: 0, body: 'body-3' });
  expect(await fetch(c2, again.handle, true)).toBeUndefined();
  c2.sock.destroy();
});

describe('with the turn budget at 0 ms', () => {
  turnBudgetEach(0);

  it('takes a burst of frames over many turns (the socket held meanwhile), in order, and confirms them all', async () => {
    const { c, q } = await newQueue();
    const turns = turnCounter();
    const publishedAt: Array<[number, number]> = [];
    const spy = sinon.stub(BackingQueue.prototype, 'publish').callsFake(function (this: BackingQueue, p) {
      publishedAt.push([p.seq, turns.now()]);
      return spy.wrappedMethod.call(this, p);
    });
    try {
      const seqs = [...Array(300).keys()];
      for (const s of seqs) publish(c, q.handle, [s], 1 | 2); // one frame each, as the plugin sends them
      await c.confirmed(300);
      expect(publishedAt.map(([seq]) => seq)).toEqual(seqs);
      expect(new Set(publishedAt.map(([, t]) => t)).size).toBeGreaterThan(100);
      expect(await fetch(c, q.handle, true)).toEqual({ seq: 0, flags: 1, deliveryCount: 0, body: 'body-0' });
    } finally {
      spy.restore();
      turns.stop();
      c.sock.destroy();
    }
  });
});

/** A new queue with two persistent messages (seq 1 expiring), then its connection dropped as when the broker dies. */
async function crashWithTwo(): Promise<void> {
  const c = await Client.connect(sock);
  await start(c, []);
  const q = await init(c, 0);
  publish(c, q.handle, [0, 1], 1 | 2, [1]);
  for (let i = 0; i < 200 && c.confirms.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
  c.sock.destroy();
  await c.closed;
}

it('recovers a queue whose connection dropped (the broker died) as non-clean, all redelivered', async () => {
  await crashWithTwo();
  const c = await Client.connect(sock);
  expect(await start(c, [KEY])).toEqual([0]);
  const again = await init(c, 2);
  expect(again).toMatchObject({ len: 2, pcount: 2, expiring: 1 });
  // It may have been delivered before the crash: delivery count 1.
  expect(await fetch(c, again.handle, true)).toEqual({ seq: 0, flags: 1 | 4, deliveryCount: 1, body: 'body-0' });
  c.sock.destroy();
});

it("names the queue and its vhost in the lines its queue index logs (a torn journal tail cut at recovery)", async () => {
  await crashWithTwo();
  // A crash mid-append: half a record after the last whole one.
  fs.appendFileSync(path.join(vdir(), 'warren', 'queues', KEY, 'journal'), Buffer.from([1, 2, 3, 4, 5]));
  const lines: string[] = [];
  const write = sinon.stub(process.stdout, 'write').callsFake((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  setLogLevel('info');
  let c: Client;
  try {
    c = await Client.connect(sock);
    await start(c, [KEY]);
    expect(await init(c, 2)).toMatchObject({ len: 2 });
  } finally {
    setLogLevel('error');
    write.restore();
  }
  const cut = lines.filter((l) => /journal .*cut 5 bytes/.test(l));
  expect(cut).toHaveLength(1);
  expect(cut[0]).toMatch(/^\[warn\] queue 'q' in vhost '\/': queue journal \S+: cut 5 bytes at offset \d+/);
  expect(lines.some((l) => /^\[info\] queue 'q' in vhost '\/': recovered 2 messages \(non-clean stop/.test(l))).toBe(true);
  c.sock.destroy();
});

it('delivery counts: FAIL_DELIVERY before READ (ackfold) and before REQUEUE counts a failed delivery; a published count is kept; a clean restart keeps them', async () => {
  const { c, q } = await newQueue();
  publish(c, q.handle, [0, 1, 2], 1 | 2, [], { 1: 3 });
  await c.confirmed(3);
  const counts = (es: { seq: number; deliveryCount: number }[]) => es.map((e) => [e.seq, e.deliveryCount]);
  expect(counts(readEntries(await c.call(Op.FETCH, (w) => w.u32(q.handle).u32(3).u8(1).u8(1))))).toEqual([[0, 0], [1, 3], [2, 0]]);
  // ackfold with DelFailed: FAIL_DELIVERY (async; seq 99 is no pending ack) right before READ, whose reply shows the new counts.
  c.cast(Op.FAIL_DELIVERY, (w) => w.u32(q.handle).u32(3).u64(0).u64(1).u64(99));
  expect(counts(readEntries(await c.call(Op.READ, (w) => w.u32(q.handle).u32(2).u64(0).u64(1))))).toEqual([[0, 1], [1, 4]]);
  // requeue with DelFailed: FAIL_DELIVERY then REQUEUE; the next delivery carries the count.
  c.cast(Op.FAIL_DELIVERY, (w) => w.u32(q.handle).u32(1).u64(0));
  c.cast(Op.REQUEUE, (w) => w.u32(q.handle).u32(1).u64(0));
  expect(await fetch(c, q.handle, true)).toEqual({ seq: 0, flags: 1 | 4, deliveryCount: 2, body: 'body-0' });
  expect(counts(readEntries(await c.call(Op.FOLD, (w) => w.u32(q.handle).i64(-1).u32(10))))).toEqual([[0, 2], [1, 4], [2, 0]]);

  const { c: c2, again } = await restartClean(c, q.handle);
  expect(counts(readEntries(await c2.call(Op.FETCH, (w) => w.u32(again.handle).u32(3).u8(1).u8(1))))).toEqual([[0, 2], [1, 4], [2, 0]]);
  c2.sock.destroy();
});

it('read-ahead: reserved messages are not delivered until DELIVER, and RELEASE puts them back unchanged', async () => {
  const c = await Client.connect(sock);
  await start(c, []);
  const q = await init(c, 0);
  publish(c, q.handle, [0, 1, 2], 1);
  const reserve = await c.call(Op.FETCH, (w) => w.u32(q.handle).u32(3).u8(2).u8(1));
  expect(reserve.u32()).toBe(3);
  c.cast(Op.DELIVER, (w) => w.u32(q.handle).u32(1).u64(0));
  c.cast(Op.RELEASE, (w) => w.u32(q.handle).u32(2).u64(1).u64(2));
  c.cast(Op.REQUEUE, (w) => w.u32(q.handle).u32(1).u64(0));
  expect(await fetch(c, q.handle, false)).toEqual({ seq: 0, flags: 1 | 4, deliveryCount: 0, body: 'body-0' });
  expect(await fetch(c, q.handle, false)).toEqual({ seq: 1, flags: 1, deliveryCount: 0, body: 'body-1' });
  expect(await fetch(c, q.handle, false)).toEqual({ seq: 2, flags: 1, deliveryCount: 0, body: 'body-2' });
  c.sock.destroy();
});

it('with windows of 4 messages: PEEK and FETCH read the index past the window, PURGE streams it, figures stay exact', async () => {
  await server.shutdown();
  const small = { queue: { window: 4, segmentEntries: 8, journalEntries: 16 } };
  server = await newServer(small);
  const { c, q } = await newQueue();
  const seqs = Array.from({ length: 100 }, (_, i) => i);
  publish(c, q.handle, seqs, 1 | 2);
  for (let i = 0; i < 400 && c.confirms.length < 100; i++) await new Promise((r) => setTimeout(r, 5));
  expect(c.confirms.length).toBe(100);
  const peek = await c.call(Op.PEEK, (w) => w.u32(q.handle).u32(10));
  expect(peek.u32()).toBe(10);
  for (let s = 0; s < 30; s++) expect(await fetch(c, q.handle, false)).toEqual({ seq: s, flags: 1, deliveryCount: 0, body: `body-${s}` });

  const { c: c2, again } = await restartClean(c, q.handle, small);
  expect(again).toMatchObject({ len: 70, pcount: 70, bytes: 70 * 'body-NN'.length, nextSeq: 100 });
  for (let s = 30; s < 40; s++) expect(await fetch(c2, again.handle, true)).toEqual({ seq: s, flags: 1, deliveryCount: 0, body: `body-${s}` });
  const purged = await c2.call(Op.PURGE, (w) => w.u32(again.handle));
  expect([purged.u32(), purged.u32(), Number(purged.u64())]).toEqual([60, 60, 60 * 'body-NN'.length]);
  expect(await fetch(c2, again.handle, false)).toBeUndefined();
  const stats = server.stats() as { vhosts: Record<string, { queues: Record<string, { len: number; unacked: number; persistentCount: number }> }> };
  expect(stats.vhosts['/'].queues.q).toMatchObject({ len: 0, unacked: 10, persistentCount: 10 });
  c2.sock.destroy();
});

describe('the link is the broker\'s alone', () => {
  /** Resolves with the log lines the sidecar writes while `fn` runs. */
  async function logged(fn: () => Promise<void>): Promise<string> {
    setLogLevel('info');
    const lines: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    try {
      await fn();
    } finally {
      spy.mockRestore();
      setLogLevel('error');
      void write;
    }
    return lines.join('');
  }

  it('puts its socket (0600) in a private directory (0700), and refuses a directory of another user', async () => {
    expect(fs.statSync(path.dirname(sock)).mode & 0o777).toBe(0o700);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    await server.shutdown();
    const theirs = path.join(dir, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o777 });
    fs.chownSync(theirs, 65534, 65534);
    sock = path.join(theirs, 's.sock');
    await expect(newServer()).rejects.toThrow(/belongs to uid 65534/);
    expect(fs.existsSync(sock)).toBe(false);
    sock = path.join(dir, 'run', 's.sock');
    server = await newServer();
  });

  it('refuses (and logs) a peer without the token, with a wrong token, or announcing a large frame before it', async () => {
    const out = await logged(async () => {
      const none = await Client.connect(sock, null);
      none.sock.write(new Writer().u8(Op.STATS).u32(1).finish(true));
      await none.closed;
      const wrong = await Client.connect(sock, null);
      wrong.sock.write(new Writer().u8(Op.AUTH).u32(1).bytes(crypto.randomBytes(TOKEN_BYTES)).finish(true));
      await wrong.closed;
      const big = await Client.connect(sock, null);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(1 << 30); // 1 GiB announced: refused on the header, nothing buffered
      big.sock.write(head);
      await big.closed;
    });
    expect(out).toMatch(/connection \d+ refused: first frame is op 17, not AUTH/);
    expect(out).toMatch(/connection \d+ refused: wrong token/);
    expect(out).toMatch(/connection \d+ refused: frame of 1073741824 bytes exceeds the 64-byte limit/);
    // The broker's connection is still served.
    const good = await Client.connect(sock);
    expect(await start(good, [])).toEqual([]);
    // After AUTH, frames are limited to the configured maximum (1 MiB here), checked on the header.
    const head = Buffer.alloc(4);
    head.writeUInt32BE((1 << 20) + 1);
    good.sock.write(head);
    await good.closed;
  });

  it('serves a handle only on the connection that opened it', async () => {
    const owner = await Client.connect(sock);
    await start(owner, []);
    const q = await init(owner, 0);
    publish(owner, q.handle, [0], 1 | 2);
    await owner.confirmed(1);
    const other = await Client.connect(sock);
    await expect(other.call(Op.FETCH, (w) => w.u32(q.handle).u32(1).u8(0).u8(1))).rejects.toThrow(new RegExp(`unknown queue handle ${q.handle}`));
    await expect(other.call(Op.TERMINATE, (w) => w.u32(q.handle))).rejects.toThrow(/unknown queue handle/);
    // The owner's message is untouched.
    expect(await fetch(owner, q.handle, false)).toEqual({ seq: 0, flags: 1, deliveryCount: 0, body: 'body-0' });
    owner.sock.destroy();
    other.sock.destroy();
  });

  it('refuses START, INIT and DELETE_CRASHED for directories that are not vhost directories under the data dir', async () => {
    const c = await Client.connect(sock);
    // Somebody else's data, shaped like a vhost's.
    const victim = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-victim-'));
    const planted = path.join(victim, 'warren', 'queues', KEY);
    fs.mkdirSync(planted, { recursive: true });
    fs.writeFileSync(path.join(planted, 'journal'), 'precious');
    const outside = [victim, path.join(dir, 'msg_stores', 'vhosts', '..', '..', '..', path.basename(victim)), path.join(dir, 'msg_stores'), 'relative/dir'];
    for (const d of outside) {
      await expect(start(c, [], [], d)).rejects.toThrow(/is not a vhost directory under/);
      await expect(c.call(Op.INIT, (w) => w.str('/').str(d).str(KEY).str('q').u8(1).u8(0))).rejects.toThrow(/is not a vhost directory/);
      await expect(c.call(Op.DELETE_CRASHED, (w) => w.str('/').str(d).str(KEY))).rejects.toThrow(/is not a vhost directory/);
    }
    expect(fs.readFileSync(path.join(planted, 'journal'), 'utf8')).toBe('precious');
    fs.rmSync(victim, { recursive: true, force: true });
    c.sock.destroy();
  });

  it('refuses a new queue over an existing queue directory, leaving that queue and its session intact', async () => {
    const c = await Client.connect(sock);
    await start(c, []);
    const q = await init(c, 0);
    publish(c, q.handle, [0, 1], 1 | 2);
    await c.confirmed(2);
    await expect(init(c, 0)).rejects.toThrow(/already exists; a new queue never takes over existing state/);
    // The first session still works and still has both messages.
    expect(await fetch(c, q.handle, false)).toEqual({ seq: 0, flags: 1, deliveryCount: 0, body: 'body-0' });
    expect(await fetch(c, q.handle, false)).toEqual({ seq: 1, flags: 1, deliveryCount: 0, body: 'body-1' });
    c.sock.destroy();
  });

  it('moves a queue\'s state from its legacy key to its new one at START', async () => {
    const LEGACY = 'fedcba9876543210fedcba9876543210';
    let c = await Client.connect(sock);
    await start(c, []);
    const old = await c.call(Op.INIT, (w) => w.str('/').str(vdir()).str(LEGACY).str('q').u8(1).u8(0));
    const handle = old.u32();
    publish(c, handle, [0, 1, 2], 1 | 2);
    await c.confirmed(3);
    await c.call(Op.TERMINATE, (w) => w.u32(handle));
    c.sock.destroy();
    await server.shutdown();

    server = await newServer();
    c = await Client.connect(sock);
    await start(c, [KEY], [LEGACY]);
    expect(fs.existsSync(path.join(vdir(), 'warren', 'queues', LEGACY))).toBe(false);
    const again = await init(c, 1);
    expect(again).toMatchObject({ len: 3, pcount: 3 });
    // The store knew the queue by its old key, so it rebuilt its ref counts: recovered as after a crash, redelivered (delivered once).
    expect(await fetch(c, again.handle, false)).toEqual({ seq: 0, flags: 1 | 4, deliveryCount: 1, body: 'body-0' });
    c.sock.destroy();
  });

  it('keeps replies within the frame limit: read-ahead FETCH and FOLD stop at half of it, at least one message', async () => {
    const c = await Client.connect(sock);
    await start(c, []);
    const q = await init(c, 0);
    // Messages of 200 KiB (their size as RabbitMQ counts it) under a 1 MiB limit: 2 fit in the 512 KiB budget.
    c.cast(Op.PUBLISH, (w) => {
      w.u32(q.handle).u32(5);
      for (let s = 0; s < 5; s++) {
        writePublish(w, s, 1, Buffer.alloc(200 * 1024, s));
      }
    });
    const fold = await c.call(Op.FOLD, (w) => w.u32(q.handle).i64(-1).u32(256));
    expect(fold.u32()).toBe(2);
    const reserve = await c.call(Op.FETCH, (w) => w.u32(q.handle).u32(5).u8(2).u8(1));
    expect(reserve.u32()).toBe(2);
    // the bodies come back exactly (they go out in pieces, uncopied)
    for (let s = 0; s < 2; s++) {
      expect(reserve.u64()).toBe(s);
      reserve.u8();
      reserve.u32();
      reserve.i64();
      reserve.u32();
      reserve.bytes(16);
      const blob = reserve.bytes(reserve.u32());
      expect(blob.equals(Buffer.alloc(200 * 1024, s))).toBe(true);
    }
    reserve.end();
    c.sock.destroy();
  });
});

describe('a full disk', () => {
  it('fails the queue with a FAILED push naming it and the cause, confirms nothing more, and once space is back the restarted queue works with every confirmed message', async () => {
    const c = await Client.connect(sock);
    await start(c, []);
    const q = await init(c, 0);
    publish(c, q.handle, [0, 1], 1 | 2);
    await c.confirmed(2);
    // Every write fails as on a full disk: the store's segment writer and the queue's journal.
    const fh = await fs.promises.open(path.join(dir, 'probe'), 'w');
    await fh.close();
    const proto = Object.getPrototypeOf(fh) as Record<string, unknown>;
    const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const stubs = [sinon.stub(proto, 'write').rejects(enospc()), sinon.stub(proto, 'writev').rejects(enospc())];
    let message: string;
    try {
      publish(c, q.handle, [2], 1 | 2);
      message = await c.failed(q.handle);
    } finally {
      for (const s of stubs) s.restore();
    }
    expect(message).toMatch(/^queue 'q' in vhost '\/' failed: .*ENOSPC/);
    expect(c.confirms.map((b) => b[0])).toEqual([0, 1]);
    await expect(fetch(c, q.handle, false)).rejects.toThrow(/ENOSPC/);

    // Space is back; RabbitMQ restarts the queue process (non-clean INIT): the store is reopened from the queue indexes.
    const again = await init(c, 2);
    expect(again.len).toBeGreaterThanOrEqual(2);
    expect(await fetch(c, again.handle, false)).toMatchObject({ seq: 0, body: 'body-0' });
    expect(await fetch(c, again.handle, false)).toMatchObject({ seq: 1, body: 'body-1' });
    publish(c, again.handle, [again.nextSeq], 1 | 2);
    await c.confirmed(3);
    expect(c.confirms[2][0]).toBe(again.nextSeq);
    c.sock.destroy();
  });
});
