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
  /** Record reads of one event-loop turn, coalesced by file. */
  diskReads: DiskReads;
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
  let buf: Buffer;
  try {
    buf = await h.diskReads.read(loc);
  } catch (e) {
    // the file went away under us: the message was removed meanwhile
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const r = buf.length === loc.totalSize ? decodeRecord(buf) : undefined;
  if (!r || r.kind !== 'ok' || r.totalSize !== loc.totalSize || !r.id.equals(id)) {
    h.onDamaged();
    h.log('error', `record of ${id.toString('hex')} at ${loc.file}${SEGMENT_EXT}:${loc.offset} is damaged (${r ? r.kind : 'short read'}); not returned`);
    return undefined;
  }
  return r.body;
}

/** Records apart by at most this many bytes are read together (the bytes between are read and dropped). */
const READ_GAP = 16 * 1024;
/** The largest read a run of records is made into. */
const READ_RUN = 1024 * 1024;

interface RecordRead {
  offset: number;
  size: number;
  resolve: (b: Buffer) => void;
  reject: (e: unknown) => void;
}

/**
 * The record reads asked for in one turn of the event loop (a queue's
 * read-ahead asks for up to 256 bodies at once), grouped by file and sorted:
 * records that lie together (apart by at most READ_GAP) are read with one
 * pread of up to READ_RUN bytes instead of one each. A consumer draining a
 * backlog reads its messages in the order they were written, so most of a
 * run is records it wants; where other queues' records lie between (queues
 * published at once), a run reads at most as many bytes nobody asked for as
 * bytes asked for. A record read alone comes back as its own buffer; one of
 * a run of several is copied out, so that no body keeps a run's buffer (up
 * to 1 MiB, others' bytes included) alive while it waits for its consumer.
 * A record comes back shorter than asked if the file ends first; a failed
 * read fails every record of its run.
 */
export class DiskReads {
  private byFile = new Map<number, RecordRead[]>();
  private scheduled = false;
  /** preads issued (stats). */
  reads = 0;

  constructor(private readonly handles: HandleCache) {}

  read(loc: MsgLocation): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      let list = this.byFile.get(loc.file);
      if (!list) this.byFile.set(loc.file, (list = []));
      list.push({ offset: loc.offset, size: loc.totalSize, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // after every read this turn's microtasks reach (their lookups resolve there)
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const byFile = this.byFile;
    this.byFile = new Map();
    for (const [file, list] of byFile) {
      list.sort((a, b) => a.offset - b.offset);
      let run: RecordRead[] = [];
      let start = 0;
      let end = 0;
      let wanted = 0;
      for (const r of list) {
        const rEnd = r.offset + r.size;
        const gap = Math.max(0, r.offset - end);
        const newEnd = Math.max(end, rEnd);
        if (run.length > 0 && gap <= READ_GAP && newEnd - start <= READ_RUN && newEnd - start - (wanted + r.size) <= wanted + r.size) {
          run.push(r);
          end = newEnd;
          wanted += r.size;
          continue;
        }
        if (run.length > 0) void this.readRun(file, start, end, run);
        run = [r];
        start = r.offset;
        end = rEnd;
        wanted = r.size;
      }
      if (run.length > 0) void this.readRun(file, start, end, run);
    }
  }

  private async readRun(file: number, start: number, end: number, run: RecordRead[]): Promise<void> {
    this.reads++;
    try {
      const buf = Buffer.allocUnsafe(end - start);
      const got = await this.handles.use(file, async (fh) => {
        let n = 0;
        while (n < buf.length) {
          const { bytesRead } = await fh.read(buf, n, buf.length - n, start + n);
          if (bytesRead === 0) break;
          n += bytesRead;
        }
        return n;
      });
      for (const r of run) {
        const from = r.offset - start;
        const record = buf.subarray(from, Math.max(from, Math.min(from + r.size, got)));
        r.resolve(run.length === 1 ? record : Buffer.from(record));
      }
    } catch (e) {
      for (const r of run) r.reject(e);
    }
  }
}
