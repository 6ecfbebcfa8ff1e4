import { promises as fsp } from 'fs';
import * as path from 'path';
import { MessageStore, StoreError } from '../../src/store';
import { body, checkInvariants, deltasOf, mid, freshDirEach, segmentFiles } from './helpers';
import { turnBudgetEach, turnCounter } from '../turns';

describe('MessageStore basics', () => {
  const dir = freshDirEach();

  test('write, read, contains, remove', async () => {
    const store = await MessageStore.open({ dir: dir() });
    expect(store.successfullyRecovered).toBe(false);
    const c = store.client('q1');
    c.write(mid(1), body(1));
    c.write(mid(2), body(2, 5000));
    expect(await c.read(mid(1))).toEqual(body(1));
    expect(await store.contains(mid(2))).toBe(true);
    expect(await store.contains(mid(3))).toBe(false);
    expect(await c.read(mid(3))).toBeUndefined();
    c.remove([mid(1)]);
    expect(await store.contains(mid(1))).toBe(false);
    expect(await c.read(mid(1))).toBeUndefined();
    expect(await c.read(mid(2))).toEqual(body(2, 5000));
    await checkInvariants(store);
    await store.close();
  });

  test('empty body and large body', async () => {
    const store = await MessageStore.open({ dir: dir(), fileSizeLimit: 4096 });
    const c = store.client('q');
    c.write(mid(1), Buffer.alloc(0));
    c.write(mid(2), body(2, 100_000));
    await c.sync([mid(1), mid(2)]);
    expect(await c.read(mid(1))).toEqual(Buffer.alloc(0));
    expect(await c.read(mid(2))).toEqual(body(2, 100_000));
    await store.close();
    const again = await MessageStore.open({ dir: dir(), fileSizeLimit: 4096, clientRefs: ['q'] });
    expect(await again.client('q').read(mid(2))).toEqual(body(2, 100_000));
    expect(await again.client('q').read(mid(1))).toEqual(Buffer.alloc(0));
    await again.close();
  });

  test('a body is served from memory until its record reaches the file, then from the file', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    c.write(mid(1), body(1, 64 * 1024));
    expect(await c.read(mid(1))).toEqual(body(1, 64 * 1024));
    expect(store.stats().readSources).toEqual({ dedup: 0, writeCache: 1, file: 0 });
    c.write(mid(2), body(2));
    c.write(mid(2), body(2));
    await c.sync([mid(1), mid(2)]);
    // Written (and fsynced): the cache let go of both, long before the 16 MiB file rolls.
    expect(store.stats().writeCacheEntries).toBe(0);
    expect(store.stats().writeCacheBytes).toBe(0);
    expect(await c.read(mid(1))).toEqual(body(1, 64 * 1024));
    expect(await c.read(mid(2))).toEqual(body(2));
    expect(store.stats().readSources).toEqual({ dedup: 0, writeCache: 1, file: 2 });
    await checkInvariants(store);
    await store.close();
  });

  test('ref counting across clients', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const a = store.client('a');
    const b = store.client('b');
    a.write(mid(7), body(7));
    b.write(mid(7), body(7));
    a.remove([mid(7)]);
    expect(await store.contains(mid(7))).toBe(true);
    expect(await b.read(mid(7))).toEqual(body(7));
    b.remove([mid(7)]);
    expect(await store.contains(mid(7))).toBe(false);
    // stored once
    expect(store.stats().writes).toBe(2);
    await checkInvariants(store);
    await store.close();
  });

  test('contains never overtakes a preceding remove', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    for (let i = 0; i < 100; i++) c.write(mid(i), body(i));
    const results: Array<Promise<boolean>> = [];
    for (let i = 0; i < 100; i++) {
      c.remove([mid(i)]);
      results.push(store.contains(mid(i)));
    }
    expect(await Promise.all(results)).toEqual(new Array(100).fill(false));
    await store.close();
  });

  test('a remove of a message whose write is still pending leaves the store consistent', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    c.write(mid(1), body(1));
    c.remove([mid(1)]);
    c.write(mid(1), body(1));
    expect(await c.read(mid(1))).toEqual(body(1));
    expect(await store.contains(mid(1))).toBe(true);
    c.remove([mid(1)]);
    expect(await store.contains(mid(1))).toBe(false);
    expect(await c.read(mid(1))).toBeUndefined();
    await checkInvariants(store);
    await store.close();
  });

  test('reads of unflushed messages come from the write cache, with no flush', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    c.write(mid(1), body(1, 1000));
    await store.quiesce();
    expect(await c.read(mid(1))).toEqual(body(1, 1000));
    expect((await fsp.stat(path.join(dir(), '0.rdq'))).size).toBe(0);
    await store.close();
  });

  test('sync resolves once durable; batched; already-durable and removed ids resolve without an fsync', async () => {
    const store = await MessageStore.open({ dir: dir(), syncIntervalMs: 20 });
    const c = store.client('q');
    for (let i = 0; i < 50; i++) c.write(mid(i), body(i));
    const syncs = [];
    for (let i = 0; i < 50; i++) syncs.push(c.sync([mid(i)]));
    await Promise.all(syncs);
    expect(store.stats().syncs).toBe(1);
    expect((await fsp.stat(path.join(dir(), '0.rdq'))).size).toBeGreaterThan(50 * 100);
    await c.sync([mid(3), mid(4)]);
    await c.sync([mid(999)]);
    c.write(mid(100), body(100));
    c.remove([mid(100)]);
    await c.sync([mid(100)]);
    expect(store.stats().syncs).toBe(1);
    await store.close();
  });

  test('files roll at the size limit and are numbered from 0', async () => {
    const store = await MessageStore.open({ dir: dir(), fileSizeLimit: 1000 });
    const c = store.client('q');
    for (let i = 0; i < 30; i++) c.write(mid(i), body(i, 172)); // 200 bytes per record
    await store.quiesce();
    // six full files, and the new current file the last roll created
    expect(await segmentFiles(dir())).toEqual(['0.rdq', '1.rdq', '2.rdq', '3.rdq', '4.rdq', '5.rdq', '6.rdq']);
    const s = store.fileSummaries();
    expect(s.map((x) => x.fileSize)).toEqual([1000, 1000, 1000, 1000, 1000, 1000, 0]);
    expect(store.stats().currentFile).toBe(6);
    await checkInvariants(store);
    await store.close();
  });

  test('a file whose valid data drops to zero is deleted, never the current one', async () => {
    const store = await MessageStore.open({ dir: dir(), fileSizeLimit: 1000 });
    const c = store.client('q');
    for (let i = 0; i < 12; i++) c.write(mid(i), body(i, 172));
    await store.quiesce();
    expect(await segmentFiles(dir())).toEqual(['0.rdq', '1.rdq', '2.rdq']);
    c.remove([0, 1, 2, 3, 4].map(mid)); // all of file 0
    await store.quiesce();
    expect(await segmentFiles(dir())).toEqual(['1.rdq', '2.rdq']);
    c.remove([10, 11].map(mid)); // all of the current file
    await store.quiesce();
    expect(await segmentFiles(dir())).toEqual(['1.rdq', '2.rdq']);
    await checkInvariants(store);
    const s = store.fileSummaries();
    expect(s[0]).toMatchObject({ file: 1, left: undefined, right: 2, validTotalSize: 1000, contiguousTop: 1000 });
    c.remove([5].map(mid));
    await store.quiesce();
    expect(store.fileSummaries()[0]).toMatchObject({ file: 1, validTotalSize: 800, contiguousTop: 0 });
    await store.close();
  });

  test('contiguous top follows the valid prefix', async () => {
    const store = await MessageStore.open({ dir: dir(), fileSizeLimit: 10_000 });
    const c = store.client('q');
    for (let i = 0; i < 5; i++) c.write(mid(i), body(i, 72)); // 100 bytes each
    await store.quiesce();
    expect(store.fileSummaries()[0]).toMatchObject({ validTotalSize: 500, contiguousTop: 500 });
    c.remove([mid(2)]);
    await store.quiesce();
    expect(store.fileSummaries()[0]).toMatchObject({ validTotalSize: 400, contiguousTop: 200 });
    c.write(mid(5), body(5, 72));
    await store.quiesce();
    expect(store.fileSummaries()[0]).toMatchObject({ validTotalSize: 500, contiguousTop: 200, fileSize: 600 });
    await store.close();
  });

  test('clean close and reopen with the same client refs trusts the saved state', async () => {
    const logs: string[] = [];
    let store = await MessageStore.open({ dir: dir(), fileSizeLimit: 1000 });
    const a = store.client('a');
    store.client('b');
    for (let i = 0; i < 20; i++) a.write(mid(i), body(i, 150));
    a.remove([mid(3)]);
    await store.close();
    let deltasCalled = false;
    store = await MessageStore.open({
      dir: dir(),
      fileSizeLimit: 1000,
      clientRefs: ['b', 'a'],
      refDeltas: () => {
        deltasCalled = true;
        return deltasOf([]);
      },
      log: (_l, m) => logs.push(m),
    });
    expect(store.successfullyRecovered).toBe(true);
    expect(deltasCalled).toBe(false);
    const a2 = store.client('a');
    for (let i = 0; i < 20; i++) expect(await a2.read(mid(i))).toEqual(i === 3 ? undefined : body(i, 150));
    a2.write(mid(100), body(100));
    expect(await a2.read(mid(100))).toEqual(body(100));
    await checkInvariants(store);
    await store.close();
  });

  test('a LevelDB directory deleted after a clean stop is not trusted: the store rebuilds from refDeltas and loses nothing', async () => {
    let store = await MessageStore.open({ dir: dir(), fileSizeLimit: 64 * 1024, index: 'leveldb', clientRefs: undefined });
    const q = store.client('q');
    for (let i = 0; i < 1000; i++) q.write(mid(i), body(i, 100));
    await q.sync(Array.from({ length: 1000 }, (_, i) => mid(i)));
    await store.close();
    const lvl = (await fsp.readdir(dir(), { recursive: true })).map(String).find((p) => path.basename(p) === 'leveldb');
    expect(lvl).toBeDefined();
    await fsp.rm(path.join(dir(), lvl!), { recursive: true, force: true });
    store = await MessageStore.open({
      dir: dir(),
      fileSizeLimit: 64 * 1024,
      index: 'leveldb',
      clientRefs: ['q'],
      refDeltas: () => deltasOf(Array.from({ length: 1000 }, (_, i) => [mid(i), 1] as [Buffer, number])),
    });
    expect(store.successfullyRecovered).toBe(false);
    const again = store.client('q');
    for (let i = 0; i < 1000; i++) expect(await store.contains(mid(i))).toBe(true);
    for (let i = 0; i < 1000; i += 37) expect(await again.read(mid(i))).toEqual(body(i, 100));
    await checkInvariants(store);
    await store.close();
  });

  test.each([
    ['in memory', undefined],
    ['in the index', 1],
  ])('different client refs: non-clean start, rebuilt from refDeltas counted %s', async (_how, recoveryRefsInMemory) => {
    let store = await MessageStore.open({ dir: dir(), fileSizeLimit: 1000 });
    const a = store.client('a');
    for (let i = 0; i < 10; i++) a.write(mid(i), body(i, 150));
    a.write(mid(1), body(1, 150));
    await store.close();
    store = await MessageStore.open({
      dir: dir(),
      fileSizeLimit: 1000,
      clientRefs: ['a', 'zzz'],
      recoveryRefsInMemory,
      refDeltas: () => deltasOf([[mid(1), 1], [mid(1), 1], [mid(2), 1], [mid(5), 1], [mid(5), -1], [mid(42), 1]]),
    });
    expect(store.successfullyRecovered).toBe(false);
    const c = store.client('a');
    expect(await c.read(mid(1))).toEqual(body(1, 150));
    expect(await c.read(mid(2))).toEqual(body(2, 150));
    expect(await store.contains(mid(0))).toBe(false);
    expect(await store.contains(mid(5))).toBe(false);
    expect(await store.contains(mid(42))).toBe(false);
    c.remove([mid(1)]);
    expect(await store.contains(mid(1))).toBe(true);
    c.remove([mid(1)]);
    expect(await store.contains(mid(1))).toBe(false);
    await checkInvariants(store);
    await store.close();
  });

  test('contains asked many at once are answered right, and LevelDB reads them in a few trips', async () => {
    let store = await MessageStore.open({ dir: dir(), index: 'leveldb', clientRefs: undefined });
    const q = store.client('q');
    const ids = Array.from({ length: 3000 }, (_, i) => mid(i));
    for (const id of ids) q.write(id, body(1, 20));
    await q.sync(ids);
    q.remove(ids.filter((_, i) => i % 3 === 0));
    await store.close();
    // reopened clean: nothing is cached, every present id is a LevelDB read
    store = await MessageStore.open({ dir: dir(), index: 'leveldb', clientRefs: ['q'] });
    expect(store.successfullyRecovered).toBe(true);
    const asked = [...ids, mid(1_000_000)];
    const got = await Promise.all(asked.map((id) => store.contains(id)));
    expect(got).toEqual(asked.map((_, i) => i < 3000 && i % 3 !== 0));
    const ix = store.stats().index!;
    expect(ix.diskReads).toBeGreaterThanOrEqual(2000);
    expect(ix.readBatches).toBeLessThanOrEqual(Math.ceil(asked.length / 1024) + 1);
    await store.close();
  });

  test('terminate keeps the ref recorded, deleteAndTerminate forgets it', async () => {
    let store = await MessageStore.open({ dir: dir() });
    const a = store.client('a');
    const b = store.client('b');
    a.write(mid(1), body(1));
    await a.terminate();
    await b.deleteAndTerminate();
    expect(() => a.write(mid(2), body(2))).toThrow(expect.objectContaining({ code: 'CLIENT_TERMINATED' }));
    await store.close();
    store = await MessageStore.open({ dir: dir(), clientRefs: ['a', 'b'], refDeltas: () => deltasOf([[mid(1), 1]]) });
    expect(store.successfullyRecovered).toBe(false);
    await store.close();
    // the non-clean start registered nobody; register a again and close cleanly
    store = await MessageStore.open({ dir: dir(), clientRefs: [], refDeltas: () => deltasOf([[mid(1), 1]]) });
    expect(store.successfullyRecovered).toBe(true);
    store.client('a');
    await store.close();
    store = await MessageStore.open({ dir: dir(), clientRefs: ['a'] });
    expect(store.successfullyRecovered).toBe(true);
    expect(await store.client('a').read(mid(1))).toEqual(body(1));
    await store.close();
  });

  test('clientRefs undefined wipes the directory', async () => {
    let store = await MessageStore.open({ dir: dir() });
    store.client('a').write(mid(1), body(1));
    await store.close();
    await fsp.writeFile(path.join(dir(), 'stray'), 'x');
    store = await MessageStore.open({ dir: dir() });
    expect(await store.contains(mid(1))).toBe(false);
    expect(await fsp.readdir(dir())).not.toContain('stray');
    await store.close();
  });

  test('a crash loses nothing that was synced; unsynced tails are cut', async () => {
    let store = await MessageStore.open({ dir: dir(), fileSizeLimit: 2000 });
    const c = store.client('q');
    for (let i = 0; i < 30; i++) c.write(mid(i), body(i, 100));
    await c.sync([mid(29)]);
    for (let i = 30; i < 40; i++) c.write(mid(i), body(i, 100));
    await store.simulateCrash();
    const all: Array<[Buffer, number]> = [];
    for (let i = 0; i < 40; i++) all.push([mid(i), 1]);
    store = await MessageStore.open({ dir: dir(), fileSizeLimit: 2000, clientRefs: ['q'], refDeltas: () => deltasOf(all) });
    expect(store.successfullyRecovered).toBe(false);
    const c2 = store.client('q');
    for (let i = 0; i < 30; i++) expect(await c2.read(mid(i))).toEqual(body(i, 100));
    await checkInvariants(store);
    await store.close();
  });

  test('bad input gets a clear error with a stable code', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    expect(() => c.write(Buffer.alloc(3), body(1))).toThrow(StoreError);
    expect(() => c.write(Buffer.alloc(3), body(1))).toThrow(expect.objectContaining({ code: 'INVALID_ID' }));
    expect(() => c.write(mid(1), 'x' as unknown as Buffer)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => c.remove([Buffer.alloc(17)])).toThrow(expect.objectContaining({ code: 'INVALID_ID' }));
    await expect(MessageStore.open({ dir: dir() + '-x', index: 'nope' })).rejects.toMatchObject({ code: 'UNKNOWN_INDEX' });
    await expect(MessageStore.open({ dir: dir() + '-x', fileSizeLimit: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await store.close();
    expect(() => c.write(mid(1), body(1))).toThrow(expect.objectContaining({ code: 'STORE_CLOSED' }));
    await expect(store.contains(mid(1)).catch((e) => Promise.reject(e))).rejects.toMatchObject({ code: 'STORE_CLOSED' });
  });

  test('a read reports bad input and a closed store through its promise, never by throwing', async () => {
    // A queue's read-ahead starts reads and handles their failures later (src/queue/body-read-ahead.ts).
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    let bad: Promise<Buffer | undefined> | undefined;
    expect(() => (bad = c.read(Buffer.alloc(3)))).not.toThrow();
    await expect(bad).rejects.toMatchObject({ code: 'INVALID_ID' });
    await store.close();
    let closed: Promise<Buffer | undefined> | undefined;
    expect(() => (closed = c.read(mid(1)))).not.toThrow();
    await expect(closed).rejects.toMatchObject({ code: 'STORE_CLOSED' });
  });
});

describe('MessageStore with the turn budget at 0 ms', () => {
  const dir = freshDirEach();
  turnBudgetEach(0);

  test('a remove of many ids goes on over several turns, and removes them all', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    const ids = Array.from({ length: 2000 }, (_, i) => mid(i));
    ids.forEach((id, i) => c.write(id, body(i)));
    await c.sync(ids);
    const turns = turnCounter();
    const before = turns.now();
    c.remove(ids);
    expect(await store.contains(mid(1999))).toBe(false); // applied after the remove
    const spanned = turns.now() - before;
    turns.stop();
    expect(spanned).toBeGreaterThan(100);
    expect(store.stats().messages).toBe(0);
    await checkInvariants(store);
    await store.close();
  });
});
