import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sinon from 'sinon';
import { JournalEntry, RecordType, decodeRecords, encodePublish, encodeSeqs } from '../../src/queue/journal-codec';
import { JournalFiles } from '../../src/queue/journal-files';
import { DELIVERED } from '../../src/queue/journal-state';
import { SegmentCache } from '../../src/queue/segment-cache';
import { CleanTerms, OpenOptions, QueueIndex, consumeCleanMarker, parseCleanTerms, scanQueueIndex } from '../../src/queue/queue-index';
import { sealJson } from '../../src/store/fs-util';
import { rng } from '../random';

const quiet = () => undefined;
const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n, 0);
  return b;
};
const entry = (seq: number, flags = 1): JournalEntry => ({ seq, id: id(seq), flags, expiry: seq % 2 ? -1 : 1_700_000_000_000_000 + seq, size: 100 + seq });

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-qi-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function scanned(d: string): Promise<JournalEntry[]> {
  const out: JournalEntry[] = [];
  for await (const { entries } of scanQueueIndex(d)) out.push(...entries);
  return out;
}

async function readAll(index: QueueIndex): Promise<JournalEntry[]> {
  return (await index.readLive(0, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)).entries;
}

const open = (d: string, o: Partial<OpenOptions> = {}) => QueueIndex.open(d, { log: quiet, segmentEntries: 8, journalEntries: 1000, ...o });
const segFiles = (d: string) =>
  fs
    .readdirSync(d)
    .filter((f) => /^\d+\.seg$/.test(f))
    .map((f) => Number(f.split('.')[0]))
    .sort((a, b) => a - b);

describe('journal codec', () => {
  it('round-trips publish, deliver and ack records', () => {
    const buf = Buffer.concat([encodePublish(entry(1)), encodeSeqs(RecordType.DELIVER, [1]), encodeSeqs(RecordType.ACK, [1, 2 ** 40])]);
    const r = decodeRecords(buf);
    expect([r.skipped, r.tail]).toEqual([[], undefined]);
    expect(r.validBytes).toBe(buf.length);
    expect(r.records).toEqual([
      { type: RecordType.PUBLISH, entry: entry(1) },
      { type: RecordType.DELIVER, seqs: [1] },
      { type: RecordType.ACK, seqs: [1, 2 ** 40] },
    ]);
  });

  it('reports a torn tail and a flipped bit at the end as the tail', () => {
    const good = encodePublish(entry(1));
    const next = encodePublish(entry(2));
    const torn = decodeRecords(Buffer.concat([good, next.subarray(0, next.length - 3)]));
    expect([torn.records.length, torn.validBytes, torn.tail]).toEqual([1, good.length, { offset: good.length, bytes: next.length - 3, reason: 'torn' }]);
    const flipped = Buffer.concat([good, next]);
    flipped[good.length + 20] ^= 0x10;
    const bad = decodeRecords(flipped);
    expect([bad.records.length, bad.validBytes, bad.tail?.reason, bad.skipped]).toEqual([1, good.length, 'checksum', []]);
  });

  it('skips a damaged record and keeps every good one after it: a flipped bit, and a torn write with records appended behind it', () => {
    const recs = Array.from({ length: 1000 }, (_, i) => (i % 3 === 2 ? encodeSeqs(RecordType.ACK, [i - 1, i - 2]) : encodePublish(entry(i))));
    const buf = Buffer.concat(recs);
    const at = recs.slice(0, 250).reduce((n, r) => n + r.length, 0);
    buf[at + 13] ^= 0x04; // a bit in record 250 (a quarter of the way in)
    const r = decodeRecords(buf);
    expect(r.records.length).toBe(999);
    expect(r.skipped).toEqual([{ offset: at, bytes: recs[250].length, reason: 'checksum' }]);
    expect([r.tail, r.validBytes]).toEqual([undefined, buf.length]);

    // A write that failed half way (ENOSPC), then more records appended and fsynced after it.
    const torn = Buffer.concat([encodePublish(entry(1)), encodePublish(entry(2)).subarray(0, 17), encodePublish(entry(3)), encodeSeqs(RecordType.DELIVER, [3])]);
    const t = decodeRecords(torn);
    expect(t.records).toEqual([
      { type: RecordType.PUBLISH, entry: entry(1) },
      { type: RecordType.PUBLISH, entry: entry(3) },
      { type: RecordType.DELIVER, seqs: [3] },
    ]);
    expect(t.skipped).toEqual([{ offset: encodePublish(entry(1)).length, bytes: 17, reason: 'checksum' }]);
  });

  it('decodes in slices of k records what it decodes in one go, damage and tail included', () => {
    const recs = Array.from({ length: 300 }, (_, i) => (i % 3 === 2 ? encodeSeqs(RecordType.ACK, [i - 1]) : encodePublish(entry(i))));
    const buf = Buffer.concat([...recs, encodePublish(entry(999)).subarray(0, 30)]);
    const offsetOf = (k: number) => recs.slice(0, k).reduce((n, r) => n + r.length, 0);
    buf[offsetOf(64) + 13] ^= 0x04; // damage right at the end of a slice of 64
    buf[offsetOf(100) + 20] ^= 0x01;
    const whole = decodeRecords(buf);
    for (const k of [1, 7, 64, 1000]) {
      const sliced = { records: [] as unknown[], skipped: [] as unknown[], tail: undefined as unknown, calls: 0 };
      for (let pos = 0; pos < buf.length; ) {
        const r = decodeRecords(buf, pos, k);
        expect(r.records.length).toBeLessThanOrEqual(k);
        sliced.records.push(...r.records);
        sliced.skipped.push(...r.skipped);
        sliced.tail = r.tail ?? sliced.tail;
        sliced.calls++;
        pos = r.end;
      }
      expect([k, sliced.records, sliced.skipped, sliced.tail]).toEqual([k, whole.records, whole.skipped, whole.tail]);
      expect(sliced.calls).toBeGreaterThanOrEqual(Math.ceil(298 / k));
    }
    expect([whole.records.length, whole.skipped.length, whole.tail?.reason]).toEqual([298, 2, 'torn']);
  });
});

describe('QueueIndex', () => {
  it('replays publishes, deliveries and acks in seq order, from the journal and from folded segments', async () => {
    const { index } = await open(dir);
    for (const s of [0, 1, 2, 3, 4, 9, 17]) index.publish(entry(s));
    index.delivered([1, 3]);
    index.acked([0, 3]);
    await index.sync();
    const expected = [
      [1, 5],
      [2, 1],
      [4, 1],
      [9, 1],
      [17, 1],
    ];
    expect((await scanned(dir)).map((e) => [e.seq, e.flags])).toEqual(expected);
    expect((await readAll(index)).map((e) => [e.seq, e.flags])).toEqual(expected);
    await index.foldJournal();
    expect(fs.statSync(path.join(dir, 'journal')).size).toBe(0);
    expect(segFiles(dir)).toEqual([0, 1, 2]);
    expect((await scanned(dir)).map((e) => [e.seq, e.flags])).toEqual(expected);
    expect((await readAll(index)).map((e) => [e.seq, e.flags])).toEqual(expected);
    // A page of the range [2, 10): at most 2 entries, continuing after the last one.
    const page = await index.readLive(2, 10, 2);
    expect([page.entries.map((e) => e.seq), page.next]).toEqual([[2, 4], 5]);
    expect((await index.readLive(5, 10, 2)).next).toBe(10);
    await index.close();
  });

  it('reads a segment file once while a consumer takes it window by window, and again after a fold rewrote it', async () => {
    const { index } = await open(dir, { segmentEntries: 64, segmentCache: new SegmentCache(4) });
    for (let s = 0; s < 64; s++) index.publish(entry(s));
    await index.foldJournal();
    // The journal's records since the fold count on top of the cached file.
    index.acked([5]);
    index.delivered([6]);
    const seen: number[][] = [];
    for (let from = 0; from < 64; ) {
      const r = await index.readLive(from, 64, 16);
      seen.push(...r.entries.map((e) => [e.seq, e.flags]));
      from = r.next;
    }
    const expected = Array.from({ length: 64 }, (_, s) => [s, s === 6 ? 1 | DELIVERED : 1]).filter(([s]) => s !== 5);
    expect(seen).toEqual(expected);
    expect(index.segmentReads).toBe(1);
    index.acked([0, 1, 2]);
    await index.foldJournal();
    expect((await index.readLive(0, 64, 4)).entries.map((e) => [e.seq, e.flags])).toEqual([[3, 1], [4, 1], [6, 1 | DELIVERED], [7, 1]]);
    expect(index.segmentReads).toBe(2);
    await index.close();
  });

  it('cuts a torn tail on open and appends after the last good record', async () => {
    const first = await open(dir);
    first.index.publish(entry(0));
    first.index.publish(entry(1));
    await first.index.close();
    const file = path.join(dir, 'journal');
    const full = fs.readFileSync(file);
    fs.writeFileSync(file, full.subarray(0, full.length - 5));
    const warnings: string[] = [];
    const { index, recovery } = await open(dir, { log: (_l, m) => warnings.push(m) });
    expect([recovery.count, recovery.bytes, recovery.nextSeq]).toEqual([1, 100, 1]);
    expect(warnings.join()).toMatch(/cut 41 bytes/);
    index.publish(entry(7));
    await index.close();
    expect((await scanned(dir)).map((e) => e.seq)).toEqual([0, 7]);
  });

  it('deletes a segment once all its entries are acked', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 24; s++) index.publish(entry(s));
    await index.foldJournal();
    expect(segFiles(dir)).toEqual([0, 1, 2]);
    index.acked([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    index.acked([16, 17, 18, 19, 20, 21, 22]);
    await index.foldJournal();
    expect(segFiles(dir)).toEqual([1, 2]);
    index.acked([23]);
    await index.foldJournal();
    expect(segFiles(dir)).toEqual([1]);
    expect((await scanned(dir)).map((e) => e.seq)).toEqual([9, 10, 11, 12, 13, 14, 15]);
    await index.close();
  });

  it('folds by itself when the journal passes its threshold', async () => {
    const { index } = await open(dir, { journalEntries: 10 });
    for (let s = 0; s < 35; s++) index.publish(entry(s));
    await index.sync();
    expect(index.journalSize).toBeLessThan(10);
    expect(segFiles(dir).length).toBeGreaterThan(0);
    expect((await scanned(dir)).map((e) => e.seq)).toEqual(Array.from({ length: 35 }, (_, i) => i));
    await index.close();
  });

  it('terminate folds and leaves a clean marker with per-segment figures; a clean open reads no segment', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 20; s++) index.publish(entry(s));
    index.delivered([1]);
    index.acked([0, 2]);
    const terms = await index.terminate(20);
    expect(fs.statSync(path.join(dir, 'journal')).size).toBe(0);
    const marker = await consumeCleanMarker(dir);
    expect(marker).toEqual(terms);
    // Even seqs have an expiry: 4 and 6 in segment 0, 4 to 18 in all.
    expect(marker).toMatchObject({ nextSeq: 20, count: 18, expiring: 8, segments: [[0, 6, 6 * 100 + 1 + 3 + 4 + 5 + 6 + 7, 2], expect.any(Array), expect.any(Array)] });
    expect(await consumeCleanMarker(dir)).toBeUndefined();
    // Terms without the expiring figure (an older marker) are not trusted: the segments are scanned.
    const old = await open(dir, { terms: { ...marker!, expiring: undefined } });
    expect(old.recovery).toMatchObject({ count: 18, expiring: 8, scanned: true });
    await old.index.close();
    // Trusted terms: the figures come from the marker (a lie here proves no segment was read).
    const lie: CleanTerms = { ...marker!, count: 1234, bytes: 5678, expiring: 99 };
    const again = await open(dir, { terms: lie });
    expect(again.recovery).toMatchObject({ count: 1234, bytes: 5678, expiring: 99, nextSeq: 20, scanned: false });
    expect((await readAll(again.index)).map((e) => [e.seq, e.flags])).toEqual(
      Array.from({ length: 20 }, (_, s) => s)
        .filter((s) => s !== 0 && s !== 2)
        .map((s) => [s, s === 1 ? 5 : 1]),
    );
    await again.index.close();
  });

  it('the clean marker keeps the delivery counts it is given; a clean open returns those of live entries, a non-clean one none', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 20; s++) index.publish(entry(s));
    const terms = await index.terminate(20, [[9, 2], [3, 1]]);
    expect(terms.deliveryCounts).toEqual([[3, 1], [9, 2]]);
    const marker = (await consumeCleanMarker(dir))!;
    expect(marker.deliveryCounts).toEqual([[3, 1], [9, 2]]);
    // Trusted terms, and terms whose files changed since (scanned): the counts of entries still live.
    let r = await open(dir, { terms: marker });
    expect(r.recovery).toMatchObject({ scanned: false, redeliverBelow: 0, deliveryCounts: [[3, 1], [9, 2]] });
    r.index.acked([9]);
    await r.index.close();
    r = await open(dir, { terms: marker });
    expect(r.recovery).toMatchObject({ scanned: true, deliveryCounts: [[3, 1]] });
    await r.index.close();
    r = await open(dir, { contains: async (ids) => ids.map(() => true) });
    expect(r.recovery).toMatchObject({ redeliverBelow: 20, deliveryCounts: [] });
    await r.index.close();
  });

  it('does not trust a sealed marker whose delivery counts are not [seq, count ≥ 1] pairs; one without them has none', async () => {
    const { index } = await open(dir);
    index.publish(entry(0));
    await index.terminate(1, [[0, 4]]);
    const file = path.join(dir, 'clean.json');
    const good = JSON.parse(fs.readFileSync(file, 'utf8').split('\n')[1]) as Record<string, unknown>;
    for (const bad of [[[0, 0]], [[0]], [[-1, 2]], [[0, 2 ** 32]], 'x', [[0, 1.5]]]) {
      fs.writeFileSync(file, sealJson({ ...good, deliveryCounts: bad }));
      expect(parseCleanTerms(fs.readFileSync(file))).toBeUndefined();
    }
    const { deliveryCounts, ...older } = good;
    expect(deliveryCounts).toEqual([[0, 4]]);
    fs.writeFileSync(file, sealJson(older));
    const terms = (await consumeCleanMarker(dir))!;
    expect(terms.deliveryCounts).toBeUndefined();
    const r = await open(dir, { terms });
    expect(r.recovery).toMatchObject({ scanned: false, count: 1, redeliverBelow: 0, deliveryCounts: [] });
    await r.index.close();
  });

  it('a non-clean open drops entries whose body is missing and redelivers every recovered entry', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 12; s++) index.publish(entry(s));
    await index.foldJournal();
    index.publish(entry(12));
    await index.close();
    const missing = new Set([3, 12]);
    const r = await open(dir, { contains: async (ids) => ids.map((i) => !missing.has(i.readUInt32BE(0))) });
    expect(r.recovery).toMatchObject({ count: 11, dropped: 2, nextSeq: 13, scanned: true });
    r.index.publish(entry(13));
    const live = await readAll(r.index);
    expect(live.map((e) => [e.seq, e.flags])).toEqual([...[0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11].map((s) => [s, 5]), [13, 1]]);
    // The redelivery mark survives a clean stop.
    const terms = await r.index.terminate(14);
    expect(terms.redeliverBelow).toBe(13);
    const c = await open(dir, { terms: (await consumeCleanMarker(dir))! });
    expect((await readAll(c.index)).map((e) => e.flags)).toEqual([...Array(11).fill(5), 1]);
    await c.index.close();
  });

  it('treats a garbled clean marker as absent', async () => {
    fs.writeFileSync(path.join(dir, 'clean.json'), '{"nextSeq":');
    expect(await consumeCleanMarker(dir)).toBeUndefined();
    expect(fs.existsSync(path.join(dir, 'clean.json'))).toBe(false);
  });

  it('destroy removes the directory', async () => {
    const { index } = await open(dir);
    index.publish(entry(0));
    await index.destroy();
    expect(fs.existsSync(dir)).toBe(false);
  });
});

/**
 * Fold and replay against a model: random publishes, deliveries, acks, folds
 * (by hand and by threshold), and crash-reopens, including crashes in the
 * middle of a fold (any subset of its segment renames done, journal not yet
 * truncated). After every reopen the index holds exactly the model.
 */
describe('fold and replay against a model', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])('seed %i', async (seed) => {
    const random = rng(seed);
    const model = new Map<number, JournalEntry>();
    let nextSeq = 0;
    let d = path.join(dir, 'q0');
    let gen = 0;
    const opts = { segmentEntries: 8, journalEntries: 12 + Math.floor(random() * 40) };
    let index = (await open(d, opts)).index;
    const expectModel = async (entries: JournalEntry[]) => {
      const want = [...model.values()].sort((a, b) => a.seq - b.seq).map((e) => [e.seq, e.flags, e.size]);
      expect(entries.map((e) => [e.seq, e.flags, e.size])).toEqual(want);
    };
    const reopen = async (crashDir: string) => {
      const r = await open(crashDir, opts);
      index = r.index;
      d = crashDir;
      expect([r.recovery.count, r.recovery.bytes]).toEqual([model.size, [...model.values()].reduce((a, e) => a + e.size, 0)]);
      await expectModel(await readAll(index));
    };
    for (let step = 0; step < 400; step++) {
      const r = random();
      const live = [...model.keys()];
      if (r < 0.45) {
        const n = 1 + Math.floor(random() * 6);
        for (let i = 0; i < n; i++) {
          const e = entry(nextSeq++);
          index.publish(e);
          model.set(e.seq, { ...e });
        }
        if (random() < 0.2) nextSeq += Math.floor(random() * 20); // seq gaps (transient messages)
      } else if (r < 0.6) {
        const seqs = live.filter(() => random() < 0.3);
        index.delivered(seqs);
        for (const s of seqs) model.get(s)!.flags |= 4;
      } else if (r < 0.85) {
        // Acks mostly from the head, as consumers do.
        const seqs = live.filter((_, i) => i < 10 ? random() < 0.7 : random() < 0.1);
        index.acked(seqs);
        for (const s of seqs) model.delete(s);
      } else if (r < 0.9) {
        await index.foldJournal();
      } else if (r < 0.95) {
        // Crash: what was synced survives.
        await index.sync();
        const crash = path.join(dir, `q${++gen}`);
        fs.cpSync(d, crash, { recursive: true });
        await index.close();
        await reopen(crash);
      } else {
        // Crash in the middle of a fold.
        await index.sync();
        const before = path.join(dir, `before${gen}`);
        fs.cpSync(d, before, { recursive: true });
        await index.foldJournal();
        await index.close();
        const crash = path.join(dir, `q${++gen}`);
        fs.cpSync(d, crash, { recursive: true });
        fs.copyFileSync(path.join(before, 'journal'), path.join(crash, 'journal'));
        for (const f of fs.readdirSync(before).filter((x) => x.endsWith('.seg'))) {
          if (random() < 0.5) fs.copyFileSync(path.join(before, f), path.join(crash, f));
        }
        for (const f of fs.readdirSync(crash).filter((x) => x.endsWith('.seg'))) {
          if (!fs.existsSync(path.join(before, f)) && random() < 0.5) fs.rmSync(path.join(crash, f));
        }
        await reopen(crash);
      }
      if (step % 25 === 0) await expectModel(await readAll(index));
    }
    await index.sync();
    await expectModel(await scanned(d));
    // Clean stop and trusted reopen.
    const terms = await index.terminate(nextSeq);
    expect([terms.count, terms.bytes]).toEqual([model.size, [...model.values()].reduce((a, e) => a + e.size, 0)]);
    const c = await open(d, { ...opts, terms: (await consumeCleanMarker(d))! });
    expect(c.recovery.scanned).toBe(false);
    await expectModel(await readAll(c.index));
    await c.index.close();
  });
});

describe('QueueIndex under write and fsync failures', () => {
  const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  /** The prototype of fs.promises FileHandle, whose methods the journal calls. */
  async function fileHandleProto(): Promise<Record<string, (...a: unknown[]) => Promise<unknown>>> {
    const fh = await fs.promises.open(path.join(dir, 'probe'), 'w');
    await fh.close();
    return Object.getPrototypeOf(fh) as Record<string, (...a: unknown[]) => Promise<unknown>>;
  }

  it('a journal write that fails half way fails the index for good; nothing is appended behind the torn record; the next open cuts it', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 10; s++) index.publish(entry(s));
    await index.sync();
    const journal = path.join(dir, 'journal');
    const proto = await fileHandleProto();
    const write = proto.write;
    const stub = sinon.stub(proto, 'write').callsFake(async function (this: unknown, ...args: unknown[]) {
      const [buf, off, len] = args as [Buffer, number, number];
      await write.call(this, buf, off, len / 2 + 5); // record 10 and 5 bytes of record 11 reach the file
      throw enospc();
    });
    index.publish(entry(10));
    index.publish(entry(11));
    try {
      await expect(index.sync()).rejects.toThrow(/journal write \(0 of \d+ bytes written\) failed: ENOSPC/);
    } finally {
      stub.restore();
    }
    // Space is back, yet the index stays failed: no record ever follows the torn one.
    const size = fs.statSync(journal).size;
    index.publish(entry(12));
    await expect(index.sync()).rejects.toThrow(/ENOSPC/);
    await expect(index.write()).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(fs.statSync(journal).size).toBe(size);
    await index.close();

    const logged: string[] = [];
    const again = await open(dir, { log: (_l, m) => logged.push(m) });
    expect(again.recovery.count).toBe(11);
    expect((await readAll(again.index)).map((e) => e.seq)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(logged.join('\n')).toMatch(/cut 5 bytes at offset \d+ \(torn tail\)/);
    again.index.publish(entry(11));
    await again.index.sync();
    await again.index.close();
    const after = decodeRecords(fs.readFileSync(journal));
    expect([after.records.length, after.skipped, after.tail]).toEqual([12, [], undefined]);
  });

  it('a failed fsync fails the index: no later sync reports success for the records it covered', async () => {
    const { index } = await open(dir);
    index.publish(entry(0));
    const proto = await fileHandleProto();
    const stub = sinon.stub(proto, 'datasync').rejects(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    try {
      await expect(index.sync()).rejects.toThrow(/fsync failed: EIO/);
    } finally {
      stub.restore();
    }
    await expect(index.sync()).rejects.toMatchObject({ code: 'EIO' });
    expect(index.failure?.message).toMatch(/fsync failed/);
    await index.close();
  });

  it('a fold whose segment rename fails (EIO) fails the index for good; the journal stays whole, and the next open has every record', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 40; s++) index.publish(entry(s));
    await index.sync();
    await index.foldJournal(); // segments 0..4 exist: the failing fold replaces some of them
    for (let s = 40; s < 60; s++) index.publish(entry(s));
    await index.sync();
    let renames = 0;
    const rename = fs.promises.rename;
    // The second segment rename of the fold fails: one segment is replaced, the rest are not.
    const stub = sinon.stub(fs.promises, 'rename').callsFake(async (from, to) => {
      if (++renames === 2) throw Object.assign(new Error('EIO: i/o error, rename'), { code: 'EIO' });
      return rename(from, to);
    });
    try {
      await expect(index.foldJournal()).rejects.toThrow(/EIO/);
    } finally {
      stub.restore();
    }
    expect(index.failure?.message).toMatch(/EIO/);
    index.publish(entry(60));
    await expect(index.sync()).rejects.toMatchObject({ code: 'EIO' });
    expect(fs.statSync(path.join(dir, 'journal')).size).toBeGreaterThan(0);
    await index.close();
    const again = await open(dir);
    expect((await readAll(again.index)).map((e) => e.seq)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    await again.index.close();
  });

  it('a damaged record inside the journal is skipped and reported, the records after it are kept, and the journal is folded clean', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 40; s++) index.publish(entry(s));
    await index.sync();
    await index.close();
    const journal = path.join(dir, 'journal');
    const buf = fs.readFileSync(journal);
    const rec = encodePublish(entry(0)).length;
    buf[10 * rec + 12] ^= 0x01; // seq 10's record
    fs.writeFileSync(journal, buf);
    const logged: string[] = [];
    const again = await open(dir, { log: (_l, m) => logged.push(m) });
    expect(logged.join('\n')).toContain(`queue journal ${journal}: checksum record at offset ${10 * rec}, ${rec} bytes skipped; the records after it are kept`);
    expect((await readAll(again.index)).map((e) => e.seq)).toEqual([...Array.from({ length: 10 }, (_, i) => i), ...Array.from({ length: 29 }, (_, i) => i + 11)]);
    expect(fs.statSync(journal).size).toBe(0); // folded into the segments: the damage is gone from disk
    await again.index.close();
  });
});

describe('layout.json', () => {
  it('a damaged layout is recovered from the segment files (never a default that maps seqs to the wrong segments), or refused', async () => {
    // segmentEntries 8 (not the default): seqs 0..39 fold into segments 0..4.
    const { index } = await open(dir, { journalEntries: 10 });
    for (let s = 0; s < 40; s++) index.publish(entry(s));
    await index.terminate(40);
    fs.writeFileSync(path.join(dir, 'layout.json'), '{"segmentEntr');
    const logged: string[] = [];
    const again = await open(dir, { log: (_l, m) => logged.push(m) });
    expect(logged.join('\n')).toMatch(/layout.json is not JSON.*agree with 8 entries a segment, rewritten/);
    expect((await readAll(again.index)).map((e) => e.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    await again.index.close();
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'layout.json'), 'utf8'))).toEqual({ segmentEntries: 8 });

    // Opened with another configured size, no candidate fits: refused with the reason, nothing touched.
    fs.writeFileSync(path.join(dir, 'layout.json'), 'garbage');
    const before = segFiles(dir);
    await expect(open(dir, { segmentEntries: 16 })).rejects.toThrow(/no known segment size fits the segment files/);
    expect(segFiles(dir)).toEqual(before);
  });
});

describe('journal descriptors', () => {
  it('at most the limit are open while queues take turns; a journal closed to make room is fsynced first and nothing is lost', async () => {
    const pool = new JournalFiles(2);
    const dirs = Array.from({ length: 6 }, (_, i) => path.join(dir, `q${i}`));
    const idx = await Promise.all(dirs.map(async (d) => (await open(d, { journalFiles: pool })).index));
    expect(pool.stats().open).toBe(0); // nothing held until written
    const fh = await fs.promises.open(path.join(dir, 'probe'), 'w');
    await fh.close();
    const datasync = sinon.spy(Object.getPrototypeOf(fh) as { datasync: () => Promise<void> }, 'datasync');
    try {
      for (let round = 0; round < 5; round++) {
        for (let q = 0; q < idx.length; q++) {
          idx[q].publish(entry(round));
          await idx[q].write(); // written, not synced: the pool must fsync it before closing it
        }
      }
    } finally {
      datasync.restore();
    }
    expect(pool.stats()).toMatchObject({ open: 2, limit: 2, peak: 2 });
    expect(pool.stats().closedIdle).toBe(6 * 5 - 2);
    expect(datasync.callCount).toBeGreaterThanOrEqual(6 * 5 - 2);
    for (const i of idx) await i.close();
    expect(pool.stats().open).toBe(0);
    for (const d of dirs) {
      const again = await open(d, { journalFiles: pool });
      expect((await readAll(again.index)).map((e) => e.seq)).toEqual([0, 1, 2, 3, 4]);
      await again.index.close();
    }
  });
});

describe('the clean marker', () => {
  it('is sealed: a flipped digit in a figure, or an unsealed marker of 0.1, is not trusted (the index is scanned)', async () => {
    const { index } = await open(dir);
    for (let s = 0; s < 5; s++) index.publish(entry(s));
    await index.terminate(5);
    const file = path.join(dir, 'clean.json');
    const sealed = fs.readFileSync(file);
    const text = sealed.toString();
    const at = text.indexOf('"count":5');
    expect(at).toBeGreaterThan(0);
    fs.writeFileSync(file, text.slice(0, at) + '"count":7' + text.slice(at + 9));
    expect(await consumeCleanMarker(dir)).toBeUndefined();
    fs.writeFileSync(file, JSON.stringify({ nextSeq: 5, count: 5 }));
    expect(await consumeCleanMarker(dir)).toBeUndefined();
    fs.writeFileSync(file, sealed);
    expect(await consumeCleanMarker(dir)).toMatchObject({ nextSeq: 5, count: 5 });
  });
});
