/**
 * Compaction, disk bounds, the dedup cache and damaged records.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import sinon from 'sinon';
import { MessageStore } from '../../src/store';
import { body, checkInvariants, deltasOf, mid, rmDir, segmentFiles, tmpDir } from './helpers';

let dir: string;
beforeEach(async () => {
  dir = await tmpDir();
});
afterEach(async () => {
  await rmDir(dir);
});

const LIMIT = 4096;

it('keeps file bytes within 2 x live bytes + 3 file limits under churn with scattered long-lived messages', async () => {
  const store = await MessageStore.open({ dir, fileSizeLimit: LIMIT });
  const c = store.client('q');
  const live = new Set<number>();
  let n = 0;
  for (let round = 0; round < 60; round++) {
    const batch: number[] = [];
    for (let i = 0; i < 30; i++) {
      const id = n++;
      c.write(mid(id), body(id, 60 + (id % 7) * 20));
      batch.push(id);
    }
    // one in 40 messages lives for the whole test; the rest are consumed soon
    for (const id of batch) if (id % 40 !== 0) c.remove([mid(id)]);
    for (const id of batch) if (id % 40 === 0) live.add(id);
    await store.quiesce();
    const st = store.stats();
    expect(st.fileBytes).toBeLessThanOrEqual(2 * st.validBytes + 3 * LIMIT);
  }
  const st = store.stats();
  expect(st.compactions + 0).toBeGreaterThan(0);
  for (const id of live) expect(await c.read(mid(id))).toEqual(body(id, 60 + (id % 7) * 20));
  await checkInvariants(store);
  await store.close();
});

it('combines a file with its right neighbour, keeping the left contiguous prefix in place', async () => {
  const store = await MessageStore.open({ dir, fileSizeLimit: LIMIT });
  const c = store.client('q');
  // 200-byte records, 20 per file: files 0, 1, 2, 3 then the current file 4.
  for (let i = 0; i < 80; i++) c.write(mid(i), body(i, 172));
  await store.quiesce();
  const before = store.fileSummaries().map((s) => ({ file: s.file, top: s.contiguousTop }));
  expect(before.slice(0, 4).map((s) => s.file)).toEqual([0, 1, 2, 3]);
  // Keep the first 5 records of file 0 (its prefix) and a few scattered ones; drop most of 0..3.
  const keep = new Set([0, 1, 2, 3, 4, 9, 15, 27, 33, 48, 71]);
  for (let i = 0; i < 80; i++) if (!keep.has(i)) c.remove([mid(i)]);
  await store.quiesce();
  const st = store.stats();
  expect(st.compactions).toBeGreaterThan(0);
  // compaction stops once the trigger no longer holds (garbage <= 1/2, or at most 2 files' worth)
  expect(st.garbageRatio <= 0.5 || st.fileBytes <= 2 * LIMIT).toBe(true);
  expect(st.files).toBeLessThan(before.length);
  for (const i of keep) expect(await c.read(mid(i))).toEqual(body(i, 172));
  // file 0 still starts with its untouched prefix (records 0..4 in place)
  const f0 = store.fileSummaries().find((s) => s.file === 0)!;
  expect(f0.contiguousTop).toBeGreaterThanOrEqual(5 * 200);
  await checkInvariants(store);
  await store.close();
});

it('serves reads correctly while compaction runs', async () => {
  const store = await MessageStore.open({ dir, fileSizeLimit: LIMIT });
  const c = store.client('q');
  for (let i = 0; i < 400; i++) c.write(mid(i), body(i, 172));
  await store.quiesce();
  const keep = Array.from({ length: 400 }, (_, i) => i).filter((i) => i % 9 === 0);
  for (let i = 0; i < 400; i++) if (i % 9 !== 0) c.remove([mid(i)]);
  // reads issued while the removes (and the compactions they trigger) are processed
  const reads = await Promise.all(keep.map((i) => c.read(mid(i))));
  reads.forEach((b, k) => expect(b).toEqual(body(keep[k], 172)));
  await store.quiesce();
  expect(store.stats().compactions).toBeGreaterThan(0);
  await checkInvariants(store);
  await store.close();
});

it('returns the same Buffer to concurrent readers of a multiply-referenced message (dedup cache)', async () => {
  const store = await MessageStore.open({ dir, fileSizeLimit: LIMIT });
  const a = store.client('a');
  const b = store.client('b');
  a.write(mid(1), body(1, 3000));
  b.write(mid(1), body(1, 3000));
  // push it out of the current file's write cache
  for (let i = 10; i < 40; i++) a.write(mid(i), body(i, 500));
  await a.sync([mid(1)]);
  await store.quiesce();
  const [x, y] = await Promise.all([a.read(mid(1)), b.read(mid(1))]);
  expect(x).toEqual(body(1, 3000));
  expect(x).toBe(y);
  await store.close();
});

it('recovers after a crash in the middle of compaction, losing nothing', async () => {
  for (let attempt = 0; attempt < 6; attempt++) {
    const d = path.join(dir, String(attempt));
    let store = await MessageStore.open({ dir: d, fileSizeLimit: LIMIT, clientRefs: undefined });
    const c = store.client('q');
    for (let i = 0; i < 300; i++) c.write(mid(i), body(i, 172));
    await c.sync(Array.from({ length: 300 }, (_, i) => mid(i)));
    const keep = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 5 === 0);
    for (let i = 0; i < 300; i++) if (i % 5 !== 0) c.remove([mid(i)]);
    // crash after a varying number of event-loop turns: before, during or after compactions
    for (let t = 0; t < attempt * 3; t++) await new Promise((r) => setImmediate(r));
    await store.simulateCrash();
    store = await MessageStore.open({
      dir: d,
      fileSizeLimit: LIMIT,
      clientRefs: ['q'],
      refDeltas: () => deltasOf(keep.map((i) => [mid(i), 1] as [Buffer, number])),
    });
    expect(store.successfullyRecovered).toBe(false);
    const r = store.client('q');
    for (const i of keep) expect(await r.read(mid(i))).toEqual(body(i, 172));
    expect(store.stats().messages).toBe(keep.length);
    // The open writes hints of the files it scanned in the background, each
    // through `<n>.rdh.tmp`: wait for them, so that a .tmp seen is one the crash left.
    await store.quiesce();
    expect((await fsp.readdir(d)).some((f) => f.endsWith('.tmp'))).toBe(false);
    await checkInvariants(store);
    await store.close();
  }
});

it('skips a record with a flipped bit on recovery, counts it, and never returns it', async () => {
  // the 10 records fill file 0, which rolls: its damage is not the current file's torn tail (torn-writes.test.ts)
  let store = await MessageStore.open({ dir, fileSizeLimit: 10 * 328, clientRefs: undefined });
  const c = store.client('q');
  for (let i = 0; i < 10; i++) c.write(mid(i), body(i, 300));
  await c.sync(Array.from({ length: 10 }, (_, i) => mid(i)));
  await store.simulateCrash();
  const [seg, current] = await segmentFiles(dir);
  expect([seg, current]).toEqual(['0.rdq', '1.rdq']);
  await fsp.rm(path.join(dir, '0.rdh'), { force: true }); // found by the scan, not by the read
  const file = path.join(dir, seg);
  const buf = await fsp.readFile(file);
  // flip a bit in the body of the 4th record
  const recordSize = buf.length / 10;
  buf[3 * recordSize + recordSize - 10] ^= 0x04;
  await fsp.writeFile(file, buf);
  store = await MessageStore.open({
    dir,
    clientRefs: ['q'],
    refDeltas: () => deltasOf(Array.from({ length: 10 }, (_, i) => [mid(i), 1] as [Buffer, number])),
  });
  const r = store.client('q');
  expect(await r.read(mid(3))).toBeUndefined();
  for (const i of [0, 1, 2, 4, 5, 6, 7, 8, 9]) expect(await r.read(mid(i))).toEqual(body(i, 300));
  expect(store.stats()).toMatchObject({ checksumFailures: 1, tornBytes: 0, openScannedFiles: 2 });
  await store.close();
});

it.each([
  ['writes fail (ENOSPC)', 'write', 'ENOSPC'],
  ['file fsyncs fail (EIO)', 'datasync', 'EIO'],
  ['directory fsyncs fail (EIO)', 'sync', 'EIO'],
])('a compaction whose %s fails the store loudly; close still completes, and a non-clean reopen has every live message', async (_what, method, code) => {
  const logs: string[] = [];
  let failedLogged!: () => void;
  const failure = new Promise<void>((r) => (failedLogged = r));
  const store = await MessageStore.open({
    dir,
    fileSizeLimit: LIMIT,
    log: (_l, m) => {
      logs.push(m);
      if (/store failed/.test(m)) failedLogged();
    },
  });
  const c = store.client('q');
  for (let i = 0; i < 80; i++) c.write(mid(i), body(i, 172));
  await c.sync(Array.from({ length: 80 }, (_, i) => mid(i)));
  const keep = [0, 1, 2, 3, 4, 9, 15, 27, 33, 48, 71];
  // Every call of `method` fails from here on (a full disk, a failing device): compaction copies and fsyncs with those.
  const probe = await fsp.open(path.join(dir, 'probe'), 'w');
  await probe.close();
  await fsp.rm(path.join(dir, 'probe'));
  const proto = Object.getPrototypeOf(probe) as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const stub = sinon.stub(proto, method).rejects(Object.assign(new Error(`${code}: i/o failure, ${method}`), { code }));
  try {
    for (let i = 0; i < 80; i++) if (!keep.includes(i)) c.remove([mid(i)]);
    await failure; // the store logs its failure
    expect(store.stats().compactions).toBe(0);
  } finally {
    stub.restore();
  }
  expect(store.failed?.message).toMatch(new RegExp(code));
  expect(() => c.write(mid(1000), body(1000))).toThrow(/failed/);
  expect(logs.join('\n')).toMatch(/store failed, no further writes will be accepted/);
  // Removes still come (queues ack), but a failed store's counts are not trusted to delete a file:
  // a compaction that failed half-way left index entries pointing at copies that may not be there.
  const files = (await fsp.readdir(dir)).filter((f) => f.endsWith('.rdq')).sort();
  const acked = keep.filter((i) => i < 5 || (i >= 20 && i < 40)); // the second file (20 records of 200 B each) holds only 27 and 33
  c.remove(acked.map(mid));
  for (let i = 0; i < 80; i++) if (!keep.includes(i)) c.remove([mid(i)]);
  await store.quiesce();
  expect((await fsp.readdir(dir)).filter((f) => f.endsWith('.rdq')).sort()).toEqual(files);
  await store.close(); // must not wait forever on the failed compaction
  const left = keep.filter((i) => !acked.includes(i));
  const again = await MessageStore.open({ dir, fileSizeLimit: LIMIT, clientRefs: ['q'], refDeltas: () => deltasOf(left.map((i) => [mid(i), 1] as [Buffer, number])) });
  expect(again.successfullyRecovered).toBe(false);
  const c2 = again.client('q');
  for (const i of left) expect(await c2.read(mid(i))).toEqual(body(i, 172));
  for (const i of acked) expect(await c2.read(mid(i))).toBeUndefined();
  await checkInvariants(again);
  await again.close();
});

describe('a clean close whose state files cannot be written', () => {
  it.each(['file_summary.json', 'clean.json'])('EIO on the rename of %s: close rejects, the index is released, the next open rebuilds with every message', async (name) => {
    const dir = await tmpDir();
    try {
      const store = await MessageStore.open({ dir, fileSizeLimit: 4096, index: 'leveldb' });
      const c = store.client('q');
      for (let n = 0; n < 20; n++) c.write(mid(n), body(n, 300));
      await c.sync(Array.from({ length: 20 }, (_, n) => mid(n)));
      const real = fsp.rename.bind(fsp);
      const stub = sinon.stub(fsp, 'rename').callsFake(async (from, to) => {
        if (path.basename(String(to)) === name) throw Object.assign(new Error(`EIO: i/o error, rename '${String(from)}'`), { code: 'EIO' });
        return real(from, to);
      });
      try {
        await expect(store.close()).rejects.toMatchObject({ code: 'EIO' });
      } finally {
        stub.restore();
      }
      const again = await MessageStore.open({ dir, fileSizeLimit: 4096, index: 'leveldb', clientRefs: ['q'], refDeltas: () => deltasOf(Array.from({ length: 20 }, (_, n) => [mid(n), 1] as [Buffer, number])) });
      try {
        expect(again.successfullyRecovered).toBe(false);
        for (let n = 0; n < 20; n++) expect(await again.client('q').read(mid(n))).toEqual(body(n, 300));
      } finally {
        await again.close();
      }
    } finally {
      await rmDir(dir);
    }
  });
});

it('never compacts a file holding a damaged record: its count stays exact, and no file with live records is deleted', async () => {
  // 200-byte records, 21 a file. File 0 keeps 0, 10 (to be damaged, beyond the contiguous prefix), 11 and 12;
  // file 1 keeps 21; file 2 empties and goes; file 3 is current. Compacting 0 and 1 would drop 10's bytes while
  // its index entry stays, so removing 10, 11, 12 and 21 would take file 0's count to zero with 0 still in it.
  const logs: string[] = [];
  const store = await MessageStore.open({ dir, fileSizeLimit: LIMIT, log: (_l, m) => logs.push(m) });
  const c = store.client('q');
  for (let i = 0; i < 80; i++) c.write(mid(i), body(i, 172));
  await c.sync(Array.from({ length: 80 }, (_, i) => mid(i)));
  const seg0 = path.join(dir, '0.rdq');
  const buf = await fsp.readFile(seg0);
  buf[10 * 200 + 150] ^= 0x10;
  await fsp.writeFile(seg0, buf);
  const keep = [0, 10, 11, 12, 21, ...Array.from({ length: 17 }, (_, i) => 63 + i)];
  c.remove(Array.from({ length: 80 }, (_, i) => i).filter((i) => !keep.includes(i)).map(mid));
  await store.quiesce();
  expect(logs.join('\n')).toMatch(/compaction of 1\.rdq into 0\.rdq not done: segment file 0 holds 1 records that fail their checksum and \d+ bytes that are no intact record/);
  expect(store.failed).toBeUndefined();
  expect(store.stats().checksumFailures).toBe(1);
  expect(await c.read(mid(10))).toBeUndefined();
  c.remove([10, 11, 12, 21].map(mid));
  await store.quiesce();
  expect(await c.read(mid(0))).toEqual(body(0, 172));
  for (let i = 63; i < 80; i++) expect(await c.read(mid(i))).toEqual(body(i, 172));
  await checkInvariants(store);
  c.write(mid(100), body(100, 172)); // the store still takes writes
  await c.sync([mid(100)]);
  await store.close();
});
