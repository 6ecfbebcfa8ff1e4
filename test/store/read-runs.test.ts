/**
 * Reads from the segment files asked for in one event-loop turn go out as
 * one pread per run of records that lie together (reader.ts, DiskReads), and
 * each read still gets exactly its own record.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { MessageStore } from '../../src/store';
import { body, mid, freshDirEach } from './helpers';

const dir = freshDirEach();
const SIZE = 1000; // records of 1,028 bytes

/** A store holding messages 0..n-1 whose bodies are on disk only (reopened clean: no write cache). */
async function storeOnDisk(n: number): Promise<MessageStore> {
  const first = await MessageStore.open({ dir: dir() });
  const c = first.client('q');
  for (let i = 0; i < n; i++) c.write(mid(i), body(i, SIZE));
  await first.close();
  return MessageStore.open({ dir: dir(), clientRefs: ['q'] });
}

async function readAll(store: MessageStore, ids: number[]): Promise<Array<Buffer | undefined>> {
  const c = store.client('q');
  return Promise.all(ids.map((i) => c.read(mid(i))));
}

/** The ids whose read did not return exactly their body (Buffer.equals: jest's toEqual walks a Buffer byte by byte). */
function wrong(got: Array<Buffer | undefined>, ids: number[]): number[] {
  return ids.filter((id, k) => !got[k]?.equals(body(id, SIZE)));
}

it('reads asked together are served by one pread per run of nearby records, each body its own, in any order and twice over', async () => {
  const store = await storeOnDisk(600);
  const fileReads = () => store.stats().fileReads;

  // 600 adjacent records, asked in reverse and one of them twice: 617 KB, one run
  const ids = [...Array(600).keys()].reverse().concat([17]);
  expect(wrong(await readAll(store, ids), ids)).toEqual([]);
  expect(fileReads()).toBe(1);

  // every other record: the gaps are read and dropped, still one run (no more bytes skipped than wanted)
  const second = [...Array(300).keys()].map((k) => 2 * k);
  expect(wrong(await readAll(store, second), second)).toEqual([]);
  expect(fileReads()).toBe(2);

  // every third (as when three queues publish at once): a run would read twice the bytes asked
  // for, so runs stop at two records — r0 and r3 read 4 records for 2, r6 would make it 7 for 3
  const third = [...Array(200).keys()].map((k) => 3 * k);
  expect(wrong(await readAll(store, third), third)).toEqual([]);
  expect(fileReads()).toBe(2 + 100);

  // every twentieth: 19.5 KB apart, more than the 16 KiB a run may skip: a pread each
  const far = [...Array(30).keys()].map((k) => 20 * k);
  expect(wrong(await readAll(store, far), far)).toEqual([]);
  expect(fileReads()).toBe(2 + 100 + 30);
  expect(store.stats().checksumFailures).toBe(0);
  await store.close();
});

it('a body read in a run has a buffer of its own: it does not keep the run (up to 1 MiB) alive', async () => {
  const store = await storeOnDisk(600);
  const ids = [...Array(600).keys()];
  const got = await readAll(store, ids);
  expect(store.stats().fileReads).toBe(1);
  expect(wrong(got, ids)).toEqual([]);
  // 1,000-byte bodies: each in a buffer of its own or in Node's 8 KiB pool, never in the 617 KB run
  expect(Math.max(...got.map((b) => b!.buffer.byteLength))).toBeLessThanOrEqual(8192);
  await store.close();
});

it('a run longer than 1 MiB is split; reads of different files are separate runs', async () => {
  const first = await MessageStore.open({ dir: dir(), fileSizeLimit: 1 << 20 });
  const c0 = first.client('q');
  // 2,500 records of 1,028 bytes: three files of at most 1 MiB
  for (let i = 0; i < 2500; i++) c0.write(mid(i), body(i, SIZE));
  await first.close();
  const store = await MessageStore.open({ dir: dir(), fileSizeLimit: 1 << 20, clientRefs: ['q'] });
  const ids = [...Array(2500).keys()];
  expect(wrong(await readAll(store, ids), ids)).toEqual([]);
  // a file ends past the limit by its last record: a run for each whole MiB of it
  const sizes = await Promise.all(store.fileSummaries().map(async (f) => (await fsp.stat(path.join(dir(), `${f.file}.rdq`))).size));
  expect(sizes.length).toBe(3);
  expect(store.stats().fileReads).toBe(sizes.reduce((n, size) => n + Math.ceil(size / (1 << 20)), 0));
  await store.close();
});

it('a run cut short by the end of its file: the records before the end are returned, those past it are damage, never a wrong body', async () => {
  const store = await storeOnDisk(100);
  const file = path.join(dir(), '0.rdq');
  // the last 10 records and part of the 11th from the end are gone
  await fsp.truncate(file, 89 * (SIZE + 28) + 500);
  const ids = [...Array(100).keys()];
  const got = await readAll(store, ids);
  expect(wrong(got.slice(0, 89), ids.slice(0, 89))).toEqual([]);
  expect(got.slice(89).every((b) => b === undefined)).toBe(true);
  expect(store.stats()).toMatchObject({ fileReads: 1, checksumFailures: 11 });
  await store.close().catch(() => undefined);
});
