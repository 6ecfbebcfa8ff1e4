/**
 * BackingQueue with small windows, for queues much longer than them, against
 * a model: fetch order and flags, requeue, purge, fold, peek, figures, and the
 * state recovered after clean and non-clean reopens. And memory: the Message
 * objects held stay within two windows plus pending acks while the queue holds
 * 100,000+ messages.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BackingQueue } from '../../src/queue/backing-queue';
import { BodyStore, FetchMode, Flags, MessageOut } from '../../src/queue/messages';
import { QueueIndex, consumeCleanMarker } from '../../src/queue/queue-index';
import { sealJson } from '../../src/store/fs-util';
import { rng } from '../random';

const quiet = () => undefined;

/** The part of the message store a queue uses, in memory, with ref counts. */
class FakeStore implements BodyStore {
  readonly bodies = new Map<string, { body: Buffer; refs: number }>();
  write(id: Buffer, body: Buffer): void {
    const k = id.toString('hex');
    const cur = this.bodies.get(k);
    if (cur) cur.refs++;
    else this.bodies.set(k, { body: Buffer.from(body), refs: 1 });
  }
  async read(id: Buffer): Promise<Buffer | undefined> {
    return this.bodies.get(id.toString('hex'))?.body;
  }
  remove(ids: Buffer[]): void {
    for (const id of ids) {
      const k = id.toString('hex');
      const cur = this.bodies.get(k);
      if (!cur) throw new Error(`remove of unknown id ${k}`);
      if (--cur.refs === 0) this.bodies.delete(k);
    }
  }
  async sync(): Promise<void> {}
  async written(): Promise<void> {}
  async terminate(): Promise<void> {}
  async deleteAndTerminate(): Promise<void> {}
  has(id: Buffer): boolean {
    return this.bodies.has(id.toString('hex'));
  }
}

interface ModelMsg {
  seq: number;
  id: Buffer;
  persistent: boolean;
  delivered: boolean;
  size: number;
  expiry: number;
  /** Delivery count the queue must report, and whether it holds an entry for it (or counts it by redeliverBelow). */
  count: number;
  counted: boolean;
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-bq-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const idOf = (seq: number, gen: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(seq, 0);
  b.writeUInt32BE(gen, 4);
  return b;
};
const bodyOf = (id: Buffer) => Buffer.concat([Buffer.from('body-'), id]);

interface Harness {
  q: BackingQueue;
  store: FakeStore;
}

const LAYOUT = { segmentEntries: 32, journalEntries: 50 };

async function openQueue(store: FakeStore, window: number, mode: 'fresh' | 'clean' | 'crash', pager?: FakeStore): Promise<BackingQueue> {
  const qdir = path.join(dir, 'q');
  const terms = mode === 'clean' ? await consumeCleanMarker(qdir) : undefined;
  if (mode === 'clean') expect(terms).toBeDefined();
  const { index, recovery } = await QueueIndex.open(qdir, {
    log: quiet,
    ...LAYOUT,
    terms,
    contains: mode === 'crash' ? async (ids) => ids.map((id) => store.has(id)) : undefined,
  });
  return new BackingQueue({
    name: 'q',
    durable: true,
    client: store,
    index,
    recovered: recovery,
    nextSeq: recovery.nextSeq,
    onConfirm: () => undefined,
    log: (level, msg) => {
      if (level === 'error') throw new Error(msg);
    },
    syncIntervalMs: 1,
    headWindow: window,
    tailWindow: window,
    pager,
  });
}

describe('BackingQueue against a model, with small windows', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])('seed %i', async (seed) => {
    const random = rng(seed);
    const W = 8 + Math.floor(random() * 24);
    const store = new FakeStore();
    // the transient store: bodies of transient messages past the tail window go there
    const pager = new FakeStore();
    let q = await openQueue(store, W, 'fresh', pager);
    let ready: ModelMsg[] = [];
    const unacked = new Map<number, ModelMsg>();
    let nextSeq = 0;
    let gen = 0;
    const sortReady = () => ready.sort((a, b) => a.seq - b.seq);
    const check = () => {
      const f = q.figures();
      const all = [...ready, ...unacked.values()];
      expect({ len: f.len, readyBytes: f.readyBytes, expiring: f.readyExpiring, unacked: f.unacked, pc: f.persistentCount, pb: f.persistentBytes }).toEqual({
        len: ready.length,
        readyBytes: ready.reduce((a, m) => a + m.size, 0),
        expiring: ready.filter((m) => m.expiry >= 0).length,
        unacked: unacked.size,
        pc: all.filter((m) => m.persistent).length,
        pb: all.filter((m) => m.persistent).reduce((a, m) => a + m.size, 0),
      });
      // Stored bodies: exactly the persistent messages held (one reference each).
      expect(store.bodies.size).toBe(all.filter((m) => m.persistent).length);
      const mem = q.memory();
      // Paged bodies: one reference each, only of transient messages still held.
      expect(pager.bodies.size).toBe(mem.pagedTransient);
      expect(mem.pagedTransient).toBeLessThanOrEqual(all.filter((m) => !m.persistent).length);
      const transientReady = ready.filter((m) => !m.persistent).length;
      expect(mem.messages).toBeLessThanOrEqual(3 * W + 2 * unacked.size + transientReady + 64);
      // Delivery counts: one entry per message that has one, none for the rest.
      expect(mem.deliveryCounts).toBe(all.filter((m) => m.counted).length);
    };
    const expectOut = (got: MessageOut[], want: ModelMsg[], unackedFlag = false) => {
      expect(got.map((m) => [m.seq, m.flags & (Flags.DELIVERED | Flags.UNACKED | Flags.PERSISTENT), m.deliveryCount, m.size, m.id.toString('hex')])).toEqual(
        want.map((m) => [
          m.seq,
          (m.delivered ? Flags.DELIVERED : 0) | (unackedFlag || unacked.has(m.seq) ? Flags.UNACKED : 0) | (m.persistent ? Flags.PERSISTENT : 0),
          m.count,
          m.size,
          m.id.toString('hex'),
        ]),
      );
    };
    for (let step = 0; step < 700; step++) {
      const r = random();
      if (r < 0.4) {
        // A burst of publishes: the queue grows well past the windows.
        const n = 1 + Math.floor(random() * 3 * W);
        for (let i = 0; i < n; i++) {
          const seq = nextSeq++;
          const persistent = random() < 0.85;
          const delivered = random() < 0.05;
          const direct = random() < 0.03; // publish_delivered
          const id = idOf(seq, gen);
          // A message dead-lettered or moved here with its delivery_count annotation.
          const count = random() < 0.05 ? 1 + Math.floor(random() * 5) : 0;
          const m: ModelMsg = { seq, id, persistent, delivered: delivered || direct, size: 10 + (seq % 7), expiry: seq % 3 ? -1 : 1000 + seq, count, counted: count > 0 };
          const flags = (persistent ? Flags.PERSISTENT : 0) | (delivered ? Flags.DELIVERED : 0) | (direct ? Flags.UNACKED : 0) | (random() < 0.3 ? Flags.NEEDS_CONFIRMING : 0);
          q.publish({ seq, flags, deliveryCount: count, expiry: m.expiry, size: m.size, id, blob: bodyOf(id) });
          if (direct) unacked.set(seq, m);
          else ready.push(m);
        }
      } else if (r < 0.6) {
        const n = 1 + Math.floor(random() * 2 * W);
        const mode = [FetchMode.Ack, FetchMode.NoAck, FetchMode.Reserve][Math.floor(random() * 3)];
        const got = await q.fetch(n, mode, true);
        const want = ready.splice(0, n);
        expectOut(got, want, false);
        for (const m of got) expect(m.blob!.equals(bodyOf(m.id))).toBe(true);
        for (const m of want) {
          if (mode === FetchMode.NoAck) continue;
          if (mode === FetchMode.Ack) m.delivered = true;
          unacked.set(m.seq, m);
        }
      } else if (r < 0.72) {
        const seqs = [...unacked.keys()].filter(() => random() < 0.5);
        q.ack(seqs);
        for (const s of seqs) unacked.delete(s);
      } else if (r < 0.8) {
        const seqs = [...unacked.keys()].filter(() => random() < 0.5);
        if (random() < 0.5) {
          // requeue with DelFailed: FAIL_DELIVERY first (with a seq that is no pending ack)
          q.failDelivery([...seqs, nextSeq + 5]);
          for (const s of seqs) Object.assign(unacked.get(s)!, { count: unacked.get(s)!.count + 1, counted: true });
        }
        q.requeue(seqs);
        for (const s of seqs) {
          ready.push(unacked.get(s)!);
          unacked.delete(s);
        }
        sortReady();
      } else if (r < 0.83) {
        const seqs = [...unacked.keys()].filter(() => random() < 0.5);
        q.markDelivered(seqs);
        for (const s of seqs) unacked.get(s)!.delivered = true;
      } else if (r < 0.87) {
        const n = 1 + Math.floor(random() * 20);
        const got = await q.peek(n);
        expect(got.map((p) => [p.expiry, p.size, (p.flags & Flags.DELIVERED) !== 0])).toEqual(ready.slice(0, n).map((m) => [m.expiry, m.size, m.delivered]));
      } else if (r < 0.91) {
        // fold in pages, as the broker does, from a random start
        const all = [...ready, ...unacked.values()].sort((a, b) => a.seq - b.seq);
        const after = all.length && random() < 0.5 ? all[Math.floor(random() * all.length)].seq : -1;
        const want = all.filter((m) => m.seq > after).slice(0, W + 3);
        const got = await q.fold(after, W + 3);
        expectOut(got, want);
        for (const m of got) expect(m.blob!.equals(bodyOf(m.id))).toBe(true);
      } else if (r < 0.93) {
        const res = await q.purge();
        const p = ready.filter((m) => m.persistent);
        expect(res).toEqual({ count: ready.length, persistentCount: p.length, persistentBytes: p.reduce((a, m) => a + m.size, 0) });
        ready = [];
      } else if (r < 0.965) {
        // Clean stop: transients go; persistent pending acks come back ready.
        await q.terminate();
        expect(pager.bodies.size).toBe(0);
        q = await openQueue(store, W, 'clean', pager);
        ready = [...ready, ...unacked.values()].filter((m) => m.persistent);
        unacked.clear();
        sortReady();
        gen++;
      } else {
        // Crash after a group commit: everything persistent comes back, redelivered, counted as delivered once.
        await q.commit();
        await q.abandon();
        expect(pager.bodies.size).toBe(0);
        // Transient messages are gone with the process.
        q = await openQueue(store, W, 'crash', pager);
        ready = [...ready, ...unacked.values()].filter((m) => m.persistent);
        for (const m of ready) Object.assign(m, { delivered: true, count: 1, counted: false });
        unacked.clear();
        sortReady();
        gen++;
      }
      // After a crash, seqs of lost transient messages may be handed out again.
      const held = [...ready, ...unacked.values()].reduce((a, m) => Math.max(a, m.seq + 1), 0);
      expect(q.figures().nextSeq).toBeGreaterThanOrEqual(held);
      nextSeq = q.figures().nextSeq;
      check();
    }
    // Drain everything in order.
    const got = await q.fetch(ready.length + 10, FetchMode.NoAck, true);
    expectOut(got, ready);
    q.ack([...unacked.keys()]);
    ready = [];
    unacked.clear();
    check();
    await q.deleteAndTerminate();
    expect(store.bodies.size).toBe(0);
    expect(pager.bodies.size).toBe(0);
  }, 60_000);
});

describe('body read-ahead', () => {
  class CountingStore extends FakeStore {
    reads = 0;
    failing = new Set<string>();
    override async read(id: Buffer): Promise<Buffer | undefined> {
      this.reads++;
      await new Promise((r) => setImmediate(r));
      if (this.failing.has(id.toString('hex'))) throw new Error('EIO');
      return super.read(id);
    }
  }

  /** A durable queue holding n persistent messages of `size` bytes, over a store that counts its reads. */
  async function filledQueue(name: string, n: number, size: number): Promise<{ q: BackingQueue; store: CountingStore }> {
    const store = new CountingStore();
    const { index, recovery } = await QueueIndex.open(path.join(dir, name), { log: quiet });
    const q = new BackingQueue({ name, durable: true, client: store, index, recovered: recovery, nextSeq: 0, onConfirm: () => undefined, log: quiet, syncIntervalMs: 1 });
    for (let seq = 0; seq < n; seq++) {
      const id = idOf(seq, 0);
      q.publish({ seq, flags: Flags.PERSISTENT, deliveryCount: 0, expiry: -1, size, id, blob: bodyOf(id) });
    }
    return { q, store };
  }

  it('reads the next bodies while the broker delivers, within its bounds; FETCH then waits for no read; purge drops them', async () => {
    const N = 1000;
    const { q, store } = await filledQueue('ra', N, 100);
    const first = await q.fetch(1, FetchMode.Ack, true);
    expect(first[0].blob!.equals(bodyOf(idOf(0, 0)))).toBe(true);
    // One read for the message fetched, then reads ahead for the next 256.
    expect(store.reads).toBe(1 + 256);
    expect(q.memory().bodiesAhead).toBe(256);
    store.failing.add(idOf(300, 0).toString('hex')); // read ahead below, failing; the purge drops it unseen
    const next = await q.fetch(100, FetchMode.Ack, true);
    expect(next.map((m) => m.seq)).toEqual(Array.from({ length: 100 }, (_, i) => 1 + i));
    expect(next.every((m) => m.blob!.equals(bodyOf(m.id)))).toBe(true);
    // The 100 came from reads already made; 100 more are now ahead.
    expect(store.reads).toBe(1 + 256 + 100);
    expect(q.memory().bodiesAhead).toBe(256);
    // Requeued messages go back to the front and are read when fetched.
    q.requeue(next.map((m) => m.seq).filter((s) => s > 50));
    const again = await q.fetch(50, FetchMode.NoAck, true);
    expect(again.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, i) => 51 + i));
    expect(store.reads).toBe(1 + 256 + 100 + 50);
    await q.purge();
    expect(q.memory().bodiesAhead).toBe(0);
    q.ack([0, ...next.map((m) => m.seq)]);
    await q.terminate();
  });

  it('a read that failed ahead of time fails the FETCH that takes it, as a direct read would', async () => {
    const { q, store } = await filledQueue('rf', 20, 100);
    store.failing.add(idOf(10, 0).toString('hex'));
    await q.fetch(1, FetchMode.NoAck, true);
    await new Promise((r) => setTimeout(r, 10)); // the reads ahead are done, one of them failed
    expect(store.reads).toBe(20);
    await expect(q.fetch(9, FetchMode.NoAck, true)).resolves.toHaveLength(9);
    await expect(q.fetch(1, FetchMode.NoAck, true)).rejects.toThrow('EIO');
    await q.abandon();
  });

  it('reads ahead at most 2 MiB of bodies', async () => {
    const { q, store } = await filledQueue('rb', 100, 256 * 1024);
    await q.fetch(1, FetchMode.NoAck, true);
    expect(q.memory().bodiesAhead).toBe(8); // 8 × 256 KiB
    await q.terminate();
  });
});

describe('bounded memory', () => {
  it('holds at most two windows plus pending acks in memory while 120,000 messages are queued, and gives them back in order', async () => {
    const W = 256;
    const N = 120_000;
    const store = new FakeStore();
    const qdir = path.join(dir, 'big');
    const { index, recovery } = await QueueIndex.open(qdir, { log: quiet, segmentEntries: 4096, journalEntries: 4096 });
    let q = new BackingQueue({ name: 'big', durable: true, client: store, index, recovered: recovery, nextSeq: 0, onConfirm: () => undefined, log: quiet, syncIntervalMs: 1, headWindow: W, tailWindow: W });
    let peakMessages = 0;
    let peakJournal = 0;
    const sample = () => {
      const m = q.memory();
      peakMessages = Math.max(peakMessages, m.messages - m.pendingAcks);
      peakJournal = Math.max(peakJournal, m.journalEntries);
      expect(m.messages).toBeLessThanOrEqual(2 * W + m.pendingAcks);
    };
    for (let seq = 0; seq < N; seq++) {
      const id = idOf(seq, 0);
      q.publish({ seq, flags: Flags.PERSISTENT, deliveryCount: 0, expiry: -1, size: 100, id, blob: bodyOf(id) });
      if (seq % 1000 === 0) {
        sample();
        await q.commit();
      }
    }
    await q.commit();
    sample();
    expect(q.figures()).toMatchObject({ len: N, readyBytes: 100 * N, persistentCount: N, persistentBytes: 100 * N });
    expect(q.memory().deltaCount).toBeGreaterThan(N - 2 * W);
    // Consume half with acks (prefetch 100), then restart cleanly, then the rest.
    let expectSeq = 0;
    for (let i = 0; i < N / 2 / 100; i++) {
      const got = await q.fetch(100, FetchMode.Ack, true);
      expect(got.map((m) => m.seq)).toEqual(Array.from({ length: 100 }, (_, k) => expectSeq + k));
      sample();
      q.ack(got.map((m) => m.seq));
      expectSeq += 100;
    }
    await q.terminate();
    const terms = await consumeCleanMarker(qdir);
    const re = await QueueIndex.open(qdir, { log: quiet, journalEntries: 4096, terms });
    expect(re.recovery).toMatchObject({ count: N / 2, bytes: (100 * N) / 2, scanned: false });
    q = new BackingQueue({ name: 'big', durable: true, client: store, index: re.index, recovered: re.recovery, nextSeq: re.recovery.nextSeq, onConfirm: () => undefined, log: quiet, syncIntervalMs: 1, headWindow: W, tailWindow: W });
    expect(q.memory().messages).toBe(0);
    while (expectSeq < N) {
      const got = await q.fetch(500, FetchMode.NoAck, false);
      expect(got.map((m) => m.seq)).toEqual(Array.from({ length: Math.min(500, N - expectSeq) }, (_, k) => expectSeq + k));
      expect(got.every((m) => (m.flags & Flags.DELIVERED) === 0)).toBe(true);
      expectSeq += got.length;
      sample();
    }
    expect(q.figures().len).toBe(0);
    expect(peakMessages).toBeLessThanOrEqual(2 * W);
    expect(peakJournal).toBeLessThanOrEqual(4096 + 1000);
    await q.terminate();
    expect(store.bodies.size).toBe(0);
    expect(fs.readdirSync(qdir).filter((f) => f.endsWith('.seg'))).toEqual([]);
  }, 120_000);
});

describe('a failed commit', () => {
  class FailingSyncStore extends FakeStore {
    fail = false;
    override async sync(): Promise<void> {
      if (this.fail) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    }
  }

  it('fails the queue for good: what it covered is never confirmed, the owner is told once with the queue and the cause, and every later request is refused', async () => {
    const store = new FailingSyncStore();
    const { index, recovery } = await QueueIndex.open(path.join(dir, 'fails'), { log: quiet });
    const confirmed: string[] = [];
    const failures: Error[] = [];
    let failed!: () => void;
    const failure = new Promise<void>((r) => (failed = r));
    const q = new BackingQueue({
      name: "'orders' in vhost '/'",
      durable: true,
      client: store,
      index,
      recovered: recovery,
      nextSeq: 0,
      onConfirm: (ids) => confirmed.push(...ids.map((i) => i.readUInt32BE(0).toString())),
      onFailure: (e) => {
        failures.push(e);
        failed();
      },
      log: quiet,
      syncIntervalMs: 1,
    });
    const pub = (seq: number) => {
      const id = idOf(seq, 0);
      q.publish({ seq, flags: Flags.PERSISTENT | Flags.NEEDS_CONFIRMING, deliveryCount: 0, expiry: -1, size: 10, id, blob: bodyOf(id) });
    };
    pub(0);
    await q.commit();
    expect(confirmed).toEqual(['0']);
    store.fail = true;
    pub(1);
    pub(2);
    await failure;
    expect(failures.map((e) => e.message)).toEqual(["queue 'orders' in vhost '/' failed: ENOSPC: no space left on device, write"]);
    expect(failures[0]).toMatchObject({ code: 'EFAILED' });
    store.fail = false; // space is back: the queue still refuses, its process must restart
    expect(() => pub(3)).toThrow(/failed: ENOSPC/);
    await expect(q.fetch(1, FetchMode.Ack, true)).rejects.toThrow(/failed: ENOSPC/);
    await expect(q.commit()).rejects.toThrow(/failed: ENOSPC/);
    expect(confirmed).toEqual(['0']);
    expect(failures.length).toBe(1);
    await q.abandon();
  });
});

describe('durability write', () => {
  /** Records which of its waits the queue used; sync (an fsync) or written (a write) may be made to fail. */
  class WaitRecordingStore extends FakeStore {
    readonly calls: string[] = [];
    failWritten = false;
    override async sync(ids: Buffer[] = []): Promise<void> {
      this.calls.push(`sync ${ids.length}`);
    }
    override async written(ids: Buffer[] = []): Promise<void> {
      this.calls.push(`written ${ids.length}`);
      if (this.failWritten) throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
    }
  }

  async function queueOver(store: WaitRecordingStore, name: string, durability: 'fsync' | 'write', onFailure?: (e: Error) => void) {
    const { index, recovery } = await QueueIndex.open(path.join(dir, name), { log: quiet });
    const confirmed: number[] = [];
    let confirmedAll!: () => void;
    const all = new Promise<void>((r) => (confirmedAll = r));
    const q = new BackingQueue({
      name,
      durable: true,
      client: store,
      index,
      recovered: recovery,
      nextSeq: 0,
      onConfirm: (ids) => {
        confirmed.push(...ids.map((i) => i.readUInt32BE(0)));
        if (confirmed.length === 3) confirmedAll();
      },
      onFailure,
      log: quiet,
      syncIntervalMs: 0,
      durability,
      writeSyncIntervalMs: 60_000, // no journal fsync by the timer during the test
    });
    for (let seq = 0; seq < 3; seq++) {
      const id = idOf(seq, 0);
      q.publish({ seq, flags: Flags.PERSISTENT | Flags.NEEDS_CONFIRMING, deliveryCount: 0, expiry: -1, size: 10, id, blob: bodyOf(id) });
    }
    return { q, index, confirmed, all };
  }

  it('confirms once the store has written the bodies, without asking for an fsync; fsync mode asks for one', async () => {
    const w = new WaitRecordingStore();
    const a = await queueOver(w, 'write-mode', 'write');
    await a.all; // the commit starts by itself, with no timer (syncIntervalMs 0)
    expect(a.confirmed.sort()).toEqual([0, 1, 2]);
    expect(w.calls).toEqual(['written 3']);
    await a.q.terminate();
    const f = new WaitRecordingStore();
    const b = await queueOver(f, 'fsync-mode', 'fsync');
    await b.all;
    expect(f.calls).toEqual(['sync 3']);
    await b.q.terminate();
  });

  it('a failed write fails the queue: nothing it covered is confirmed', async () => {
    const w = new WaitRecordingStore();
    w.failWritten = true;
    let failed!: (e: Error) => void;
    const failure = new Promise<Error>((r) => (failed = r));
    const a = await queueOver(w, 'write-fails', 'write', (e) => failed(e));
    expect((await failure).message).toMatch(/failed: EIO/);
    expect(a.confirmed).toEqual([]);
    await a.q.abandon();
  });
});

describe('delivery counts (RabbitMQ 4.3 delivery_count)', () => {
  const store = () => new FakeStore();
  const pub = (q: BackingQueue, seq: number, opts: { deliveryCount?: number; persistent?: boolean } = {}) => {
    const id = idOf(seq, 0);
    q.publish({ seq, flags: opts.persistent === false ? 0 : Flags.PERSISTENT, deliveryCount: opts.deliveryCount ?? 0, expiry: -1, size: 10, id, blob: bodyOf(id) });
  };
  const counts = (ms: MessageOut[]) => ms.map((m) => [m.seq, m.deliveryCount]);
  /** Fetches everything with ack and requeues it: the counts as the next consumer would see them. */
  const peekCounts = async (q: BackingQueue) => {
    const got = await q.fetch(1000, FetchMode.Ack, true);
    q.requeue(got.map((m) => m.seq));
    return counts(got);
  };

  it('a failed delivery before requeue counts 1, then 2 on the next fetch; a requeue without it counts nothing', async () => {
    const q = await openQueue(store(), 8, 'fresh');
    pub(q, 0);
    expect(counts(await q.fetch(1, FetchMode.Ack, true))).toEqual([[0, 0]]);
    q.failDelivery([0]);
    q.requeue([0]);
    expect(counts(await q.fetch(1, FetchMode.Ack, true))).toEqual([[0, 1]]);
    q.failDelivery([0]);
    q.requeue([0]);
    expect(counts(await q.fetch(1, FetchMode.Ack, true))).toEqual([[0, 2]]);
    q.requeue([0]);
    expect(counts(await q.fetch(1, FetchMode.Ack, true))).toEqual([[0, 2]]);
    // Only pending acks count: a ready message and an unknown seq are left alone.
    pub(q, 1);
    q.failDelivery([1, 77]);
    expect(counts(await q.fetch(1, FetchMode.Ack, true))).toEqual([[1, 0]]);
    expect(q.memory().deliveryCounts).toBe(1);
    await q.terminate();
  });

  it('a published count is kept and grows by a failed delivery; READ (ackfold) and FOLD carry it; an ack drops the entry', async () => {
    const q = await openQueue(store(), 8, 'fresh');
    pub(q, 0, { deliveryCount: 3 });
    pub(q, 1);
    expect(q.memory().deliveryCounts).toBe(1);
    expect(counts(await q.fetch(2, FetchMode.Ack, true))).toEqual([[0, 3], [1, 0]]);
    q.failDelivery([0, 1]);
    expect(counts(await q.read([0, 1]))).toEqual([[0, 4], [1, 1]]);
    expect(counts(await q.fold(-1, 10))).toEqual([[0, 4], [1, 1]]);
    expect(q.memory().deliveryCounts).toBe(2);
    q.ack([0]);
    expect(q.memory().deliveryCounts).toBe(1);
    q.purgeAcks();
    expect(q.memory().deliveryCounts).toBe(0);
    // A fetch without ack and a purge drop them too.
    pub(q, 2, { deliveryCount: 2 });
    pub(q, 3, { deliveryCount: 5 });
    expect(counts(await q.fetch(1, FetchMode.NoAck, true))).toEqual([[2, 2]]);
    await q.purge();
    expect(q.memory().deliveryCounts).toBe(0);
    await q.terminate();
  });

  it('a clean stop keeps the counts of persistent messages (transient ones go) and the redelivery mark; the clean file of an older Warren means none', async () => {
    const s = store();
    let q = await openQueue(s, 4, 'fresh');
    // Past the windows: messages in the index only (the delta) keep their counts too.
    for (let seq = 0; seq < 20; seq++) pub(q, seq, { deliveryCount: seq % 5 === 0 ? seq + 1 : 0, persistent: seq !== 15 });
    const got = await q.fetch(2, FetchMode.Ack, true);
    q.failDelivery(got.map((m) => m.seq));
    await q.commit();
    await q.terminate();
    const marker = fs.readFileSync(path.join(dir, 'q', 'clean.json'));
    q = await openQueue(s, 4, 'clean');
    const want = Array.from({ length: 20 }, (_, seq) => seq)
      .filter((seq) => seq !== 15)
      .map((seq) => [seq, seq === 0 ? 2 : seq === 1 ? 1 : seq % 5 === 0 ? seq + 1 : 0]);
    expect(await peekCounts(q)).toEqual(want);
    expect(q.memory().deliveryCounts).toBe(4);
    await q.terminate();

    // The same marker as a Warren without delivery counts wrote it (no deliveryCounts): no counts.
    const { deliveryCounts, ...older } = JSON.parse(marker.toString().split('\n')[1]) as Record<string, unknown>;
    expect(deliveryCounts).toEqual([[0, 2], [1, 1], [5, 6], [10, 11]]);
    fs.writeFileSync(path.join(dir, 'q', 'clean.json'), sealJson(older));
    q = await openQueue(s, 4, 'clean');
    expect((await peekCounts(q)).every(([, n]) => n === 0)).toBe(true);
    await q.terminate();
  });

  it('after a non-clean stop every recovered message counts 1 (2 after a failed delivery), kept by a clean stop; one published after it counts 0', async () => {
    const s = store();
    let q = await openQueue(s, 4, 'fresh');
    for (let seq = 0; seq < 10; seq++) pub(q, seq, { deliveryCount: seq === 3 ? 7 : 0 });
    await q.commit();
    await q.abandon();
    q = await openQueue(s, 4, 'crash');
    // The map is not kept across a crash: 1 for all, seq 3 too; nothing held for it.
    expect(q.memory().deliveryCounts).toBe(0);
    pub(q, 10);
    expect(counts(await q.fetch(2, FetchMode.Ack, true))).toEqual([[0, 1], [1, 1]]);
    q.failDelivery([0]);
    q.requeue([0, 1]);
    expect(await peekCounts(q)).toEqual([...Array.from({ length: 10 }, (_, seq) => [seq, seq === 0 ? 2 : 1]), [10, 0]]);
    expect(q.memory().deliveryCounts).toBe(1);
    await q.terminate();
    // A clean stop keeps the redelivery mark with the counts.
    q = await openQueue(s, 4, 'clean');
    pub(q, 11);
    expect(await peekCounts(q)).toEqual([...Array.from({ length: 10 }, (_, seq) => [seq, seq === 0 ? 2 : 1]), [10, 0], [11, 0]]);
    expect(q.memory().deliveryCounts).toBe(1);
    await q.terminate();
  });
});
