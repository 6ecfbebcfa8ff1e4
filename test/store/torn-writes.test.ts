/**
 * A crash in the middle of a flush whose writes were in flight at once: a later
 * write landed and an earlier one did not, leaving a gap of zeros inside the
 * current file. Recovery must keep every referenced record on either side,
 * cover the gap with a filler so that the file is sound for later scans, hints
 * and compaction, and cut the tail when nothing referenced follows the gap.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { MessageStore } from '../../src/store';
import { scanSegment } from '../../src/store/segment-scanner';
import { body, checkInvariants, deltasOf, freshDirEach, mid } from './helpers';

const dir = freshDirEach();
const LIMIT = 4096;
const BODY = 172; // 200-byte records: 20 fill file 0 without rolling it
const R = BODY + 28;
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

/** 20 synced records in file 0 (the current file), then a crash, then bytes [from, to) of the file zeroed. */
async function crashWithGap(from: number, to: number): Promise<string> {
  const store = await MessageStore.open({ dir: dir(), fileSizeLimit: LIMIT, clientRefs: undefined });
  const c = store.client('q');
  for (const i of range(0, 20)) c.write(mid(i), body(i, BODY));
  await c.sync(range(0, 20).map(mid));
  await store.simulateCrash();
  const file = path.join(dir(), '0.rdq');
  const fh = await fsp.open(file, 'r+');
  await fh.write(Buffer.alloc(to - from), 0, to - from, from);
  await fh.close();
  return file;
}

function reopen(referenced: number[], logs: string[] = []): Promise<MessageStore> {
  return MessageStore.open({
    dir: dir(),
    fileSizeLimit: LIMIT,
    clientRefs: ['q'],
    refDeltas: () => deltasOf(referenced.map((i) => [mid(i), 1] as [Buffer, number])),
    log: (_l, m) => logs.push(m),
  });
}

it('covers a gap followed by referenced records with a filler: both sides stay readable and the file compacts later', async () => {
  // record 5's header and 100 bytes of its body landed; the rest up to record 8 did not
  const file = await crashWithGap(5 * R + 128, 8 * R);
  const logs: string[] = [];
  const store = await reopen(range(0, 20), logs);
  const c = store.client('q');
  for (const i of [...range(0, 5), ...range(8, 20)]) expect(await c.read(mid(i))).toEqual(body(i, BODY));
  for (const i of [5, 6, 7]) expect(await store.contains(mid(i))).toBe(false);
  expect(store.stats()).toMatchObject({ tornBytes: 3 * R, checksumFailures: 0, skippedBytes: 0, messages: 17 });
  expect(logs.join('\n')).toMatch(/0\.rdq, the current file, held no intact record in 600 bytes at 1000 .*1 covered by fillers/);
  const scan = await scanSegment(file);
  expect(scan).toMatchObject({ checksumFailures: 0, skippedBytes: 0, damaged: [], fillerBytes: 3 * R, fileSize: 20 * R });
  expect(scan.records.map((r) => r.offset)).toEqual([...range(0, 5), ...range(8, 20)].map((i) => i * R));

  // Roll file 0 away, then empty most of it: compaction must take it like any other file.
  for (const i of range(20, 60)) c.write(mid(i), body(i, BODY));
  await c.sync(range(20, 60).map(mid));
  c.remove([...range(1, 5), ...range(8, 20), ...range(21, 40)].map(mid));
  await store.quiesce();
  expect(store.stats().compactions).toBeGreaterThan(0);
  expect(logs.join('\n')).not.toMatch(/not done/);
  for (const i of [0, 20, ...range(40, 60)]) expect(await c.read(mid(i))).toEqual(body(i, BODY));
  await checkInvariants(store);
  await store.close();
});

it('cuts a gap that only unreferenced records follow, with them', async () => {
  const file = await crashWithGap(12 * R + 40, 15 * R);
  const store = await reopen(range(0, 10));
  expect((await fsp.stat(file)).size).toBe(10 * R);
  expect(store.stats()).toMatchObject({ tornBytes: 3 * R, checksumFailures: 0, skippedBytes: 0, messages: 10 });
  const c = store.client('q');
  for (const i of range(0, 10)) expect(await c.read(mid(i))).toEqual(body(i, BODY));
  c.write(mid(99), body(99, BODY));
  await c.sync([mid(99)]);
  await store.close();
  expect(await scanSegment(file)).toMatchObject({ checksumFailures: 0, skippedBytes: 0, fileSize: 11 * R });
});

it('leaves damage in a file that is not the current one as damage', async () => {
  await crashWithGap(0, 0);
  let store = await reopen(range(0, 20));
  const c = store.client('q');
  for (const i of range(20, 40)) c.write(mid(i), body(i, BODY)); // file 0 rolls
  await c.sync(range(20, 40).map(mid));
  await store.simulateCrash();
  const f0 = path.join(dir(), '0.rdq');
  const fh = await fsp.open(f0, 'r+');
  await fh.write(Buffer.alloc(R), 0, R, 3 * R + 50);
  await fh.close();
  await fsp.rm(path.join(dir(), '0.rdh'), { force: true }); // else the hint spares it the scan
  const logs: string[] = [];
  store = await reopen(range(0, 40), logs);
  expect(store.stats()).toMatchObject({ tornBytes: 0, checksumFailures: 1 });
  expect(await scanSegment(f0)).toMatchObject({ checksumFailures: 1, fillerBytes: 0 });
  expect(logs.join('\n')).toMatch(/0\.rdq: 1 records failed their checksum/);
  await store.close();
});

it('takes a filler whose header does not check out for damage', async () => {
  const file = await crashWithGap(5 * R, 8 * R);
  await (await reopen(range(0, 20))).close();
  const sound = await scanSegment(file);
  expect(sound).toMatchObject({ fillerBytes: 3 * R, skippedBytes: 0 });
  const fh = await fsp.open(file, 'r+');
  await fh.write(Buffer.from([0xff]), 0, 1, 5 * R + 6); // in the filler's Len: its CRC no longer matches
  await fh.close();
  expect(await scanSegment(file)).toMatchObject({ fillerBytes: 0, skippedBytes: 3 * R, damaged: [{ offset: 5 * R, size: 3 * R, checksumFailures: 0 }] });
});
