import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { LevelDbIndex } from '../../src/index/leveldb';
import type { Index } from '../../src/index/types';
import { levelDbIndexFactory, levelDbIndexWith } from '../../src/index/leveldb-factory';
import { describeIndexConformance } from './index-conformance';

describeIndexConformance('leveldb', levelDbIndexFactory);

const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n, 12);
  return b;
};

/**
 * LevelDB refuses the batches the index writes (each a chained batch: the
 * refusal comes from its write(), as LevelDB's own would) while `failing()`.
 */
function refuseWrites(index: Index, err: () => Error, failing: () => boolean = () => true): { count: number; restore(): void } {
  type Part = { write: () => Promise<void>; close: () => Promise<void> };
  const db = (index as unknown as { db: { batch: (...a: unknown[]) => unknown } }).db;
  const real = db.batch;
  const refusals = { count: 0, restore: () => void (db.batch = real) };
  db.batch = (...a: unknown[]) => {
    const part = real.apply(db, a) as Part;
    if (a.length > 0) return part;
    const write = part.write.bind(part);
    part.write = () => {
      if (!failing()) return write();
      refusals.count++;
      void part.close();
      return Promise.reject(err());
    };
    return part;
  };
  return refusals;
}

describe('LevelDB index', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-leveldb-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves lookups correctly with a tiny cache (entries evicted and read back from LevelDB)', async () => {
    const { index } = await levelDbIndexWith({ cacheEntries: 8 }).open(dir, false);
    for (let i = 0; i < 500; i++) index.insert(id(i), { refCount: 1, file: i % 7, offset: i * 3, totalSize: 9 });
    await index.flush();
    for (let i = 499; i >= 0; i -= 13) expect(await index.lookup(id(i))).toEqual({ refCount: 1, file: i % 7, offset: i * 3, totalSize: 9 });
    await index.terminate();
  });

  it('rebuilds, with a warning, from a corrupt directory marked clean', async () => {
    const first = await levelDbIndexFactory.open(dir, false);
    first.index.insert(id(1), { refCount: 1, file: 0, offset: 0, totalSize: 1 });
    await first.index.terminate();
    // garble LevelDB's own files
    const dbDir = path.join(dir, 'leveldb');
    for (const f of fs.readdirSync(dbDir)) if (/^(CURRENT|MANIFEST)/.test(f)) fs.writeFileSync(path.join(dbDir, f), 'garbage');
    const warnings: string[] = [];
    const again = await levelDbIndexWith({ warn: (m) => warnings.push(m) }).open(dir, true);
    expect(again.recovered).toBe(false);
    expect(warnings.join()).toMatch(/cannot be trusted.*rebuilding/);
    expect(await again.index.lookup(id(1))).toBeUndefined();
    again.index.insert(id(2), { refCount: 1, file: 0, offset: 0, totalSize: 1 });
    expect(await again.index.lookup(id(2))).toBeDefined();
    await again.index.terminate();
  });

  it('a lookup racing a compaction update sees a whole location, old or new', async () => {
    const { index } = await levelDbIndexFactory.open(dir, false);
    index.insert(id(1), { refCount: 2, file: 3, offset: 100, totalSize: 50 });
    await index.flush();
    const seen = index.lookup(id(1));
    index.update(id(1), { refCount: 2, file: 1, offset: 900, totalSize: 50 });
    const l = await seen;
    expect([JSON.stringify({ refCount: 2, file: 3, offset: 100, totalSize: 50 }), JSON.stringify({ refCount: 2, file: 1, offset: 900, totalSize: 50 })]).toContain(JSON.stringify(l));
    expect(await index.lookup(id(1))).toEqual({ refCount: 2, file: 1, offset: 900, totalSize: 50 });
    await index.terminate();
  });

  it('moves and deletes of entries evicted from the cache keep deleteByFile and size right', async () => {
    const { index } = await levelDbIndexWith({ cacheEntries: 2 }).open(dir, false);
    for (let i = 0; i < 50; i++) index.insert(id(i), { refCount: 1, file: 1, offset: i * 10, totalSize: 10 });
    await index.flush();
    for (let i = 40; i < 50; i++) await index.lookup(id(i)); // evicts 0..9 from the cache
    for (let i = 0; i < 10; i++) index.update(id(i), { refCount: 1, file: 2, offset: i * 10, totalSize: 10 });
    for (let i = 10; i < 20; i++) index.delete(id(i));
    await index.flush();
    expect(index.size()).toBe(40);
    await index.deleteByFile([1]);
    expect(index.size()).toBe(10);
    for (let i = 0; i < 10; i++) expect(await index.lookup(id(i))).toEqual({ refCount: 1, file: 2, offset: i * 10, totalSize: 10 });
    for (let i = 10; i < 50; i++) expect(await index.lookup(id(i))).toBeUndefined();
    const all: number[] = [];
    for await (const [k] of index.entries()) all.push(k.readUInt32BE(12));
    expect(all.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await index.deleteByFile([2]);
    expect(index.size()).toBe(0);
    await index.terminate();
  });

  it('writes a large flush in LevelDB batches of at most 1,024 (each is encoded synchronously), every entry there after', async () => {
    const { index } = await levelDbIndexWith({ maxPendingWrites: 1_000_000 }).open(dir, false);
    const ix = index as LevelDbIndex;
    const N = 5000;
    for (let i = 0; i < N; i++) index.insert(id(i), { refCount: 1, file: 0, offset: i * 10, totalSize: 10 });
    await index.flush();
    expect(ix.stats()).toMatchObject({ batches: Math.ceil(N / 1024), batchOps: N });
    let n = 0;
    for await (const [k, l] of index.entries()) expect(l.offset).toBe(k.readUInt32BE(12) * 10), n++;
    expect(n).toBe(N);
    await index.terminate();
  });

  it('a message inserted and deleted before its batch goes out never reaches LevelDB', async () => {
    const { index } = await levelDbIndexWith({ maxPendingWrites: 100 }).open(dir, false);
    const ix = index as LevelDbIndex;
    // 1000 short-lived messages, 50 alive at a time (a queue with a fast consumer)
    for (let i = 0; i < 1000; i++) {
      index.insert(id(i), { refCount: 1, file: 0, offset: i * 10, totalSize: 10 });
      if (i >= 50) index.delete(id(i - 50));
    }
    await index.flush();
    expect(ix.stats().batchOps).toBe(50);
    expect(index.size()).toBe(50);
    // a stored one deleted later costs a delete; updates of stored ones are puts
    index.delete(id(950));
    await index.updateFields(id(951), { refCount: 2 });
    await index.flush();
    expect(ix.stats().batchOps).toBe(52);
    const left: number[] = [];
    for await (const [k, l] of index.entries()) left.push(k.readUInt32BE(12) * 10 + l.refCount);
    expect(left).toEqual([...Array.from({ length: 49 }, (_, j) => (951 + j) * 10 + (j === 0 ? 2 : 1))]);
    await index.terminate();
  });

  it('answers lookups of new ids from the Bloom filter, without reading LevelDB', async () => {
    const { index } = await levelDbIndexWith({ cacheEntries: 10 }).open(dir, false);
    const ix = index as LevelDbIndex;
    for (let i = 0; i < 5000; i++) index.insert(id(i), { refCount: 1, file: 1, offset: i, totalSize: 1 });
    await index.flush();
    for (let i = 5000; i < 15000; i++) expect(await index.lookup(id(i))).toBeUndefined();
    expect(ix.stats().diskReads).toBeLessThan(200); // false positives only (~1%)
    for (let i = 0; i < 5000; i += 7) expect(await index.lookup(id(i))).toEqual({ refCount: 1, file: 1, offset: i, totalSize: 1 });
    await index.terminate();
  });

  it('grows its Bloom filter by rebuilding it from LevelDB while writes and lookups go on, missing no id', async () => {
    const { index } = await levelDbIndexWith({ cacheEntries: 10, maxPendingWrites: 256, bloomMinCapacity: 500 }).open(dir, false);
    const ix = index as LevelDbIndex;
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      index.insert(id(i), { refCount: 1, file: 2, offset: i, totalSize: 1 });
      if (i % 97 === 0) await index.lookup(id(i >> 1));
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
      if (i % 3 === 0 && i > 0) index.delete(id(i - 1));
    }
    await index.flush();
    while (!ix.stats().bloomReady) await new Promise((r) => setTimeout(r, 5));
    // it started sized for 500 ids; now it is sized for what LevelDB holds
    expect(ix.stats().bloomRebuilds).toBeGreaterThanOrEqual(1);
    expect((ix.stats().bloomBytes * 8) / 10).toBeGreaterThanOrEqual(0.9 * index.size());
    let wrong = 0;
    for (let i = 0; i < n; i++) {
      const want = i % 3 === 2 ? undefined : { refCount: 1, file: 2, offset: i, totalSize: 1 };
      if (JSON.stringify(await index.lookup(id(i))) !== JSON.stringify(want)) wrong++;
    }
    expect(wrong).toBe(0);
    await index.terminate();
  }, 30_000);

  it('keeps its Bloom filter across a clean restart, and rebuilds one that is missing or damaged', async () => {
    const first = await levelDbIndexWith({ cacheEntries: 10 }).open(dir, false);
    for (let i = 0; i < 3000; i++) first.index.insert(id(i), { refCount: 1, file: 0, offset: i, totalSize: 1 });
    await first.index.terminate();
    const again = await levelDbIndexWith({ cacheEntries: 10 }).open(dir, true);
    const ix = again.index as LevelDbIndex;
    expect(again.recovered).toBe(true);
    expect(ix.stats().bloomReady).toBe(true);
    for (let i = 3000; i < 6000; i++) expect(await again.index.lookup(id(i))).toBeUndefined();
    expect(ix.stats().diskReads).toBeLessThan(100);
    await again.index.terminate();
    // a damaged filter is not used: the index is still exact, and builds a new one
    const bloomFile = path.join(dir, 'leveldb-bloom.bin');
    const b = fs.readFileSync(bloomFile);
    b[100] ^= 1;
    fs.writeFileSync(bloomFile, b);
    const third = await levelDbIndexWith({ cacheEntries: 10 }).open(dir, true);
    expect(third.recovered).toBe(true);
    for (let i = 0; i < 3000; i += 11) expect(await third.index.lookup(id(i))).toEqual({ refCount: 1, file: 0, offset: i, totalSize: 1 });
    while (!(third.index as LevelDbIndex).stats().bloomReady) await new Promise((r) => setTimeout(r, 5));
    await third.index.terminate();
    fs.rmSync(bloomFile);
    const fourth = await levelDbIndexWith({ cacheEntries: 10 }).open(dir, true);
    expect(fourth.recovered).toBe(true);
    for (let i = 0; i < 3000; i += 13) expect(await fourth.index.lookup(id(i))).toEqual({ refCount: 1, file: 0, offset: i, totalSize: 1 });
    await fourth.index.terminate();
  });

  it('a batch LevelDB refuses is kept and written by the next flush, under newer writes', async () => {
    const warnings: string[] = [];
    const { index } = await levelDbIndexWith({ cacheEntries: 1, warn: (m) => warnings.push(m) }).open(dir, false);
    let fail = true;
    refuseWrites(index, () => new Error('disk full'), () => fail);
    for (let i = 0; i < 10; i++) index.insert(id(i), { refCount: 1, file: 0, offset: i, totalSize: 1 });
    await expect(index.flush()).rejects.toThrow('disk full');
    expect(warnings.join()).toMatch(/failed \(disk full\); retry 1 of 4 in 50 ms/);
    index.update(id(3), { refCount: 5, file: 0, offset: 3, totalSize: 1 });
    index.delete(id(4));
    fail = false;
    await index.flush();
    const all = new Map<number, number>();
    for await (const [k, l] of index.entries()) all.set(k.readUInt32BE(12), l.refCount);
    expect([...all.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 5, 6, 7, 8, 9]);
    expect(all.get(3)).toBe(5);
    await index.terminate();
  });

  it('trusts a clean stop only if LevelDB itself holds its clean record: a deleted or swapped directory is rebuilt', async () => {
    const warnings: string[] = [];
    const f = levelDbIndexWith({ warn: (m) => warnings.push(m) });
    const first = await f.open(dir, false);
    for (let i = 0; i < 100; i++) first.index.insert(id(i), { refCount: 1, file: 0, offset: i, totalSize: 1 });
    await first.index.terminate();
    // Kept aside: a LevelDB directory of the same index from an earlier clean stop.
    const dbDir = path.join(dir, 'leveldb');
    const older = path.join(dir, 'older');
    fs.cpSync(dbDir, older, { recursive: true });
    const second = await f.open(dir, true);
    expect([second.recovered, second.index.size()]).toEqual([true, 100]);
    second.index.delete(id(0));
    await second.index.terminate();

    // The directory deleted: never an empty index taken for a clean one.
    fs.rmSync(dbDir, { recursive: true, force: true });
    const afterDelete = await f.open(dir, true);
    expect(afterDelete.recovered).toBe(false);
    await afterDelete.index.terminate();
    // A directory from another clean stop put in its place: its generation differs.
    const marker = fs.readFileSync(path.join(dir, 'leveldb-clean.json'));
    fs.rmSync(dbDir, { recursive: true, force: true });
    fs.renameSync(older, dbDir);
    fs.writeFileSync(path.join(dir, 'leveldb-clean.json'), marker);
    const swapped = await f.open(dir, true);
    expect(swapped.recovered).toBe(false);
    await swapped.index.terminate();
    expect(warnings.filter((w) => /cannot be trusted/.test(w)).length).toBe(2);
  });

  it('retries a refused batch a bounded number of times with backoff, then fails for good: every later write throws', async () => {
    const warnings: string[] = [];
    const { index } = await levelDbIndexWith({ warn: (m) => warnings.push(m), idleFlushMs: 1 }).open(dir, false);
    const refusals = refuseWrites(index, () => Object.assign(new Error('IO error: No space left on device'), { code: 'LEVEL_IO_ERROR' }));
    index.insert(id(1), { refCount: 1, file: 0, offset: 0, totalSize: 1 });
    await expect(index.flush()).rejects.toThrow(/No space left/);
    // The retries run on their own timers; wait for the failure they end in.
    for (;;) {
      try {
        index.insert(id(2), { refCount: 1, file: 0, offset: 1, totalSize: 1 });
      } catch (e) {
        expect((e as Error).message).toMatch(/failed: 5 batches in a row were refused, the last with: IO error: No space left on device/);
        break;
      }
      index.delete(id(2));
      await new Promise((r) => setImmediate(r));
    }
    expect(refusals.count).toBe(5);
    expect(warnings.filter((w) => /retry \d of 4/.test(w)).length).toBe(4);
    await expect(index.flush()).rejects.toThrow(/failed: 5 batches/);
    refusals.restore();
    await index.abandon();
  });
});
