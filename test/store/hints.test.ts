/**
 * Hint files: a non-clean start reads a file's hint instead of its bytes, and
 * never trusts a hint that does not describe the file as it is.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { MessageStore } from '../../src/store';
import { decodeHint, encodeHint, hintPath } from '../../src/store/hint-file';
import * as scanner from '../../src/store/segment-scanner';
import { scanSegment } from '../../src/store/segment-scanner';
import { body, checkInvariants, deltasOf, mid, freshDirEach, segmentFiles } from './helpers';

const dir = freshDirEach();

const LIMIT = 4096;
const SIZE = 472; // 500-byte records, 9 a file

/** Writes messages 0..n-1, fsyncs them, waits for the hints, and crashes. */
async function crashedStoreOf(n: number): Promise<number[]> {
  const store = await MessageStore.open({ dir: dir(), fileSizeLimit: LIMIT });
  const c = store.client('q');
  for (let i = 0; i < n; i++) c.write(mid(i), body(i, SIZE));
  await c.sync([mid(n - 1)]);
  await store.quiesce();
  const st = store.stats();
  expect(st.hintsWritten).toBe(st.files - 1);
  await store.simulateCrash();
  return (await segmentFiles(dir())).map((f) => parseInt(f));
}

const logs: string[] = [];
async function reopen(ids: Iterable<number>): Promise<MessageStore> {
  logs.length = 0;
  const refs: Array<[Buffer, number]> = [...ids].map((i) => [mid(i), 1]);
  return MessageStore.open({ dir: dir(), fileSizeLimit: LIMIT, clientRefs: ['q'], refDeltas: () => deltasOf(refs), log: (_l, m) => logs.push(m) });
}

const range = (n: number) => [...Array(n).keys()];

async function expectAll(store: MessageStore, ids: Iterable<number>): Promise<void> {
  const c = store.client('q');
  for (const i of ids) expect(await c.read(mid(i))).toEqual(body(i, SIZE));
}

it('a non-clean start takes the records of every file but the current one from its hint, and its next files get theirs', async () => {
  const files = await crashedStoreOf(60);
  expect(files.length).toBeGreaterThan(4);
  for (const f of files.slice(0, -1)) await fsp.access(hintPath(dir(), f));
  await expect(fsp.access(hintPath(dir(), files[files.length - 1]))).rejects.toMatchObject({ code: 'ENOENT' });
  const store = await reopen(range(60));
  expect(store.successfullyRecovered).toBe(false);
  expect(store.stats()).toMatchObject({ openHintedFiles: files.length - 1, openScannedFiles: 1, messages: 60 });
  await expectAll(store, range(60));
  await checkInvariants(store);
  await store.close();
});

it("a rolled file's hint lists its records as appended, without reading the file back, byte for byte what a scan gives; a file resumed after a crash is scanned at its roll", async () => {
  const scans = jest.spyOn(scanner, 'scanSegment');
  try {
    let store = await MessageStore.open({ dir: dir(), fileSizeLimit: LIMIT });
    let c = store.client('q');
    for (let i = 0; i < 40; i++) c.write(mid(i), body(i, SIZE));
    await c.sync([mid(39)]);
    await store.quiesce();
    expect(store.stats().hintsWritten).toBe(store.stats().files - 1);
    expect(scans).not.toHaveBeenCalled();
    // 40 records of 9 a file: the current file holds 4 when the store crashes, and the reopened store appends to it
    const resumed = Math.max(...(await segmentFiles(dir())).map((f) => parseInt(f)));
    await store.simulateCrash();
    store = await reopen(range(40));
    scans.mockClear();
    c = store.client('q');
    for (let i = 40; i < 80; i++) c.write(mid(i), body(i, SIZE));
    await c.sync([mid(79)]);
    await store.quiesce();
    expect(scans.mock.calls.map((call) => path.basename(call[0]))).toEqual([`${resumed}.rdq`]);
    const files = store.fileSummaries().map((f) => f.file);
    await store.close();
    for (const f of files.slice(0, -1)) {
      const scan = await scanSegment(path.join(dir(), `${f}.rdq`));
      const hint = await fsp.readFile(hintPath(dir(), f));
      expect(hint.equals(encodeHint(f, scan.fileSize, scan.records))).toBe(true);
      expect(decodeHint(hint, f, scan.fileSize)).toEqual(scan.records);
    }
  } finally {
    scans.mockRestore();
  }
});

it('damage inside a file read from its hint is found when the record is read, and nothing else is lost', async () => {
  const files = await crashedStoreOf(40);
  // message 3 is in file 0: flip a byte of its body
  const f0 = path.join(dir(), `${files[0]}.rdq`);
  const data = await fsp.readFile(f0);
  data[3 * (SIZE + 28) + 100] ^= 0x40;
  await fsp.writeFile(f0, data);
  const store = await reopen(range(40));
  expect(store.stats()).toMatchObject({ openHintedFiles: files.length - 1, checksumFailures: 0 });
  expect(await store.client('q').read(mid(3))).toBeUndefined();
  expect(store.stats().checksumFailures).toBe(1);
  await expectAll(store, range(40).filter((i) => i !== 3));
  await store.close();
});

it.each([
  ['a flipped byte in the hint', 'checksum mismatch', true, async (f: number) => {
    const h = await fsp.readFile(hintPath(dir(), f));
    h[30] ^= 1;
    await fsp.writeFile(hintPath(dir(), f), h);
  }],
  // the scan then finds stray bytes: the file gets no new hint
  ['bytes appended to the data file', 'the file has', false, async (f: number) => {
    await fsp.appendFile(path.join(dir(), `${f}.rdq`), Buffer.alloc(10));
  }],
  ['the hint of another file', 'it describes file', true, async (f: number) => {
    await fsp.copyFile(hintPath(dir(), f + 1), hintPath(dir(), f));
  }],
  ['a truncated hint', 'records', true, async (f: number) => {
    const h = await fsp.readFile(hintPath(dir(), f));
    await fsp.writeFile(hintPath(dir(), f), h.subarray(0, h.length - 7));
  }],
])('%s: the hint is not trusted, the file is scanned', async (_what, reason, sound, damage) => {
  const files = await crashedStoreOf(60);
  await damage(files[1]);
  const store = await reopen(range(60));
  expect(logs.some((m) => m.includes(`${files[1]}.rdh not trusted`) && m.includes(reason))).toBe(true);
  expect(store.stats()).toMatchObject({ openHintedFiles: files.length - 2, openScannedFiles: 2 });
  await expectAll(store, range(60));
  await store.quiesce();
  // a sound file scanned has a true hint again; a damaged one none
  const scan = await scanSegment(path.join(dir(), `${files[1]}.rdq`));
  if (sound) expect(decodeHint(await fsp.readFile(hintPath(dir(), files[1])), files[1], scan.fileSize)).toEqual(scan.records);
  else await expect(fsp.access(hintPath(dir(), files[1]))).rejects.toMatchObject({ code: 'ENOENT' });
  await store.close();
});

it('a compaction rewrites its destination\'s hint from the new contents, and the source\'s hint goes with it', async () => {
  const store = await MessageStore.open({ dir: dir(), fileSizeLimit: LIMIT });
  const c = store.client('q');
  for (let i = 0; i < 80; i++) c.write(mid(i), body(i, SIZE));
  await c.sync([mid(79)]);
  await store.quiesce();
  const keep = new Set([0, 1, 13, 25, 40, 79]);
  for (let i = 0; i < 80; i++) if (!keep.has(i)) c.remove([mid(i)]);
  await store.quiesce();
  expect(store.stats().compactions).toBeGreaterThan(0);
  const sums = store.fileSummaries();
  const names = await fsp.readdir(dir());
  const hinted = names.filter((n) => n.endsWith('.rdh')).map((n) => parseInt(n)).sort((a, b) => a - b);
  // every file but the current one has a hint, and no deleted file keeps one
  expect(hinted).toEqual(sums.slice(0, -1).map((s) => s.file));
  for (const f of hinted) {
    const scan = await scanSegment(path.join(dir(), `${f}.rdq`));
    expect(decodeHint(await fsp.readFile(hintPath(dir(), f)), f, scan.fileSize)).toEqual(scan.records);
  }
  await store.simulateCrash();
  const again = await reopen(keep);
  expect(again.stats().openHintedFiles).toBe(hinted.length);
  await expectAll(again, keep);
  await checkInvariants(again);
  await again.close();
});

it('a clean start gives the files that have no hint one; a crash after it reads them', async () => {
  let store = await MessageStore.open({ dir: dir(), fileSizeLimit: LIMIT });
  const c = store.client('q');
  for (let i = 0; i < 50; i++) c.write(mid(i), body(i, SIZE));
  await store.close();
  for (const n of await fsp.readdir(dir())) if (n.endsWith('.rdh')) await fsp.rm(path.join(dir(), n));
  store = await MessageStore.open({ dir: dir(), fileSizeLimit: LIMIT, clientRefs: ['q'] });
  expect(store.successfullyRecovered).toBe(true);
  await store.quiesce();
  const files = store.stats().files;
  expect(store.stats().hintsWritten).toBe(files - 1);
  await store.simulateCrash();
  const again = await reopen(range(50));
  expect(again.stats().openHintedFiles).toBe(files - 1);
  await expectAll(again, range(50));
  await again.close();
});

it('a hint left by a deleted file, or half written, is removed at the next start', async () => {
  const files = await crashedStoreOf(30);
  const last = files[files.length - 1];
  await fsp.copyFile(hintPath(dir(), files[0]), hintPath(dir(), last + 5));
  await fsp.writeFile(`${hintPath(dir(), files[0])}.tmp`, 'x');
  const store = await reopen(range(30));
  const names = await fsp.readdir(dir());
  expect(names).not.toContain(`${last + 5}.rdh`);
  expect(names).not.toContain(`${files[0]}.rdh.tmp`);
  await expectAll(store, range(30));
  await store.close();
});
