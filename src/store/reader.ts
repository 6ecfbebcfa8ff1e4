/**
 * The store's read path (the reference's client_read1..3 and read_from_disk):
 * straight to the caches or the files, outside the mailbox. Its race is with
 * compaction, which moves records. A file missing or locked means a
 * compaction runs or just ran: the read waits for it and looks again. Once
 * counted as a reader of a file, no compaction can lock that file until the
 * read leaves, so a fresh lookup that still names it is exact; one naming
 * another file means the record moved before the count, and the read
 * follows it. A remove racing the read may delete the file under it: the
 * read then finds ENOENT and answers undefined, as if it came after.
 * docs/STORE.md, "Concurrency, told as stories", tells each interleaving.
 */
import { Index, MsgId, MsgLocation } from '../index/types';
import { Compactor } from './compactor';
import { DedupCache } from './dedup-cache';
import { StoreError } from './errors';
import { FileTable } from './file-table';
import { HandleCache } from './handles';
import { keyOf } from './message-id';
import { decodeRecord } from './record-codec';
import type { Logger } from '../util/logger';
import { SEGMENT_EXT, SegmentWriter } from './segment-file';
import { WriteCache } from './write-cache';

export interface ReaderHost {
  index: Index;
  files: FileTable;
  compactor: Compactor<unknown>;
  dedup: DedupCache;
  writeCache: WriteCache;
  handles: HandleCache;
  /** The current file's writer (it changes at each roll). */
  writer(): SegmentWriter;
  log: Logger;
  /** A record failed its checksum (or its id or size did not match). */
  onDamaged(): void;
  /** Where reads found their body: the caches' hit ratio (metrics). */
  readSources: ReadSources;
}

/** Reads answered from the dedup cache, the current file's write cache, and the segment files. */
export interface ReadSources {
  dedup: number;
  writeCache: number;
  file: number;
}

/** Reads that kept finding their record moved give up after this many tries. */
const MAX_ATTEMPTS = 1000;

/** The body of `id`, or undefined if the store does not hold it or its record is damaged (never returned). */
export async function readBody(h: ReaderHost, id: MsgId): Promise<Buffer | undefined> {
  const key = keyOf(id);
  const shared = h.dedup.get(key);
  if (shared) {
    h.readSources.dedup++;
    return shared;
  }
  const cached = h.writeCache.get(key);
  if (cached) {
    h.readSources.writeCache++;
    return cached;
  }
  let loc = await h.index.lookup(id);
  for (let attempt = 0; ; attempt++) {
    if (!loc) return undefined;
    if (attempt > MAX_ATTEMPTS) throw new StoreError('READ_FAILED', `read of ${id.toString('hex')} kept racing with compactions`);
    const fs = h.files.get(loc.file);
    if (!fs || fs.locked) {
      if (h.compactor.isActive) {
        await h.compactor.idle();
        loc = await h.index.lookup(id);
        continue;
      }
      const again = await h.index.lookup(id);
      if (again && again.file !== loc.file) {
        loc = again;
        continue;
      }
      if (again) h.log('error', `index places ${id.toString('hex')} in file ${loc.file}, which does not exist`);
      return undefined;
    }
    fs.readers++;
    try {
      const cur = await h.index.lookup(id);
      if (!cur) return undefined;
      if (cur.file !== loc.file) {
        loc = cur;
        continue;
      }
      h.readSources.file++;
      let body = await readFromDisk(h, id, cur);
      if (body && cur.refCount > 1) body = h.dedup.share(key, body);
      return body;
    } finally {
      fs.readers--;
      h.compactor.readerLeft(fs);
    }
  }
}

async function readFromDisk(h: ReaderHost, id: MsgId, loc: MsgLocation): Promise<Buffer | undefined> {
  const w = h.writer();
  if (loc.file === w.file && loc.offset + loc.totalSize > w.writtenOffset) await w.flush();
  const buf = Buffer.allocUnsafe(loc.totalSize);
  let got = 0;
  try {
    got = await h.handles.use(loc.file, async (fh) => {
      let n = 0;
      while (n < buf.length) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, loc.offset + n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      return n;
    });
  } catch (e) {
    // the file went away under us: the message was removed meanwhile
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const r = got === buf.length ? decodeRecord(buf) : undefined;
  if (!r || r.kind !== 'ok' || r.totalSize !== loc.totalSize || !r.id.equals(id)) {
    h.onDamaged();
    h.log('error', `record of ${id.toString('hex')} at ${loc.file}${SEGMENT_EXT}:${loc.offset} is damaged (${r ? r.kind : 'short read'}); not returned`);
    return undefined;
  }
  return r.body;
}
