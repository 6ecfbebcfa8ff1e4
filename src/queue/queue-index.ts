/**
 * The persistent index of one durable queue: a journal of publish, deliver and
 * ack records for its persistent messages, plus a clean marker written by a
 * clean stop. Replaying the journal yields the queue's live messages; a torn or
 * corrupt tail is cut off (those records were never confirmed: confirms wait
 * for the journal's fsync). The journal is rewritten to just the live messages
 * when it holds mostly dead records.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { fsyncDir } from '../store/fs-util';
import { DecodeResult, JournalEntry, RecordType, decodeRecords, encodePublish, encodeSeqs } from './journal-codec';

const JOURNAL = 'journal';
const JOURNAL_TMP = 'journal.tmp';
const CLEAN = 'clean.json';
const DELIVERED = 4;
/** Bytes of one publish record, to estimate how much of the journal is live. */
const PUBLISH_RECORD_BYTES = 46;
const REWRITE_MIN_BYTES = 4 * 1024 * 1024;

export interface CleanTerms {
  nextSeq: number;
  count: number;
}

export interface Replay {
  /** Live messages in seq order; delivered ones carry the delivered flag. */
  entries: JournalEntry[];
  /** One past the highest seq ever seen. */
  nextSeq: number;
  /** Bytes cut off the tail, and why. */
  truncated?: { bytes: number; reason: NonNullable<DecodeResult['stop']> };
}

export type Logger = (level: 'info' | 'warn' | 'error', msg: string) => void;

/** Reads a queue directory's journal without opening it for writing. */
export async function replayJournal(dir: string): Promise<Replay & { validBytes: number; fileBytes: number }> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(path.join(dir, JOURNAL));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], nextSeq: 0, validBytes: 0, fileBytes: 0 };
    throw e;
  }
  const res = decodeRecords(buf);
  const live = new Map<number, JournalEntry>();
  let nextSeq = 0;
  for (const rec of res.records) {
    if (rec.type === RecordType.PUBLISH) {
      live.set(rec.entry.seq, rec.entry);
      if (rec.entry.seq >= nextSeq) nextSeq = rec.entry.seq + 1;
    } else if (rec.type === RecordType.DELIVER) {
      for (const s of rec.seqs) {
        const e = live.get(s);
        if (e) e.flags |= DELIVERED;
      }
    } else {
      for (const s of rec.seqs) live.delete(s);
    }
  }
  const entries = [...live.values()].sort((a, b) => a.seq - b.seq);
  const out: Replay & { validBytes: number; fileBytes: number } = { entries, nextSeq, validBytes: res.validBytes, fileBytes: buf.length };
  if (res.stop) out.truncated = { bytes: buf.length - res.validBytes, reason: res.stop };
  return out;
}

/** Reads and deletes a queue's clean marker; undefined if there is none or it is unreadable. */
export async function consumeCleanMarker(dir: string): Promise<CleanTerms | undefined> {
  const file = path.join(dir, CLEAN);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  await fsp.rm(file, { force: true });
  try {
    const t = JSON.parse(text) as Partial<CleanTerms>;
    if (typeof t.nextSeq === 'number' && typeof t.count === 'number') return { nextSeq: t.nextSeq, count: t.count };
  } catch {
    /* garbled marker: treated as absent */
  }
  return undefined;
}

export class QueueIndex {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Serializes every file operation. */
  private io: Promise<void> = Promise.resolve();
  private dirty = false;
  private closed = false;

  private constructor(
    readonly dir: string,
    private fh: fsp.FileHandle,
    private fileBytes: number,
  ) {}

  /**
   * Opens (creating if needed) the queue's journal for appending and returns
   * its replay. A torn tail is truncated so new records follow good ones.
   */
  static async open(dir: string, log: Logger): Promise<{ index: QueueIndex; replay: Replay }> {
    await fsp.mkdir(dir, { recursive: true });
    const replay = await replayJournal(dir);
    const file = path.join(dir, JOURNAL);
    if (replay.truncated) {
      log('warn', `queue journal ${file}: cut ${replay.truncated.bytes} bytes at offset ${replay.validBytes} (${replay.truncated.reason})`);
      await fsp.truncate(file, replay.validBytes);
    }
    const fh = await fsp.open(file, 'a');
    if (replay.fileBytes === 0) await fsyncDir(dir);
    const index = new QueueIndex(dir, fh, replay.validBytes);
    return { index, replay };
  }

  publish(e: JournalEntry): void {
    this.append(encodePublish(e));
  }

  delivered(seqs: readonly number[]): void {
    if (seqs.length) this.append(encodeSeqs(RecordType.DELIVER, seqs));
  }

  acked(seqs: readonly number[]): void {
    if (seqs.length) this.append(encodeSeqs(RecordType.ACK, seqs));
  }

  private append(rec: Buffer): void {
    if (this.closed) throw new Error(`queue index ${this.dir} is closed`);
    this.pending.push(rec);
    this.pendingBytes += rec.length;
  }

  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  /** Writes buffered records to the file (no fsync): enough to survive a process kill. */
  write(): Promise<void> {
    return this.enqueue(() => this.writePending());
  }

  /** Writes buffered records and fsyncs: what was recorded before this call is durable when it resolves. */
  sync(): Promise<void> {
    return this.enqueue(async () => {
      await this.writePending();
      if (this.dirty) {
        this.dirty = false;
        await this.fh.datasync();
      }
    });
  }

  /** True when the journal holds far more than the live messages need. */
  wantsRewrite(liveCount: number): boolean {
    return this.fileBytes > REWRITE_MIN_BYTES && this.fileBytes > 4 * PUBLISH_RECORD_BYTES * Math.max(liveCount, 1);
  }

  /**
   * Replaces the journal by one publish record per live message. `live` must
   * reflect every record appended so far: records appended after this call go
   * to the new journal.
   */
  rewrite(live: readonly JournalEntry[]): Promise<void> {
    const snapshot = live.map(encodePublish);
    this.pending = [];
    this.pendingBytes = 0;
    return this.enqueue(async () => {
      const tmp = path.join(this.dir, JOURNAL_TMP);
      const out = await fsp.open(tmp, 'w');
      let bytes = 0;
      try {
        for (let i = 0; i < snapshot.length; i += 4096) {
          const chunk = Buffer.concat(snapshot.slice(i, i + 4096));
          await out.write(chunk);
          bytes += chunk.length;
        }
        await out.sync();
      } finally {
        await out.close();
      }
      await this.fh.close();
      await fsp.rename(tmp, path.join(this.dir, JOURNAL));
      await fsyncDir(this.dir);
      this.fh = await fsp.open(path.join(this.dir, JOURNAL), 'a');
      this.fileBytes = bytes;
      this.dirty = false;
    });
  }

  /** Clean stop: compacts the journal to `live`, fsyncs it, then writes the clean marker. */
  async terminate(live: readonly JournalEntry[], terms: CleanTerms): Promise<void> {
    await this.rewrite(live);
    await this.enqueue(async () => {
      const tmp = path.join(this.dir, CLEAN + '.tmp');
      await fsp.writeFile(tmp, JSON.stringify(terms));
      const h = await fsp.open(tmp, 'r+');
      await h.sync();
      await h.close();
      await fsp.rename(tmp, path.join(this.dir, CLEAN));
      await fsyncDir(this.dir);
    });
    await this.close();
  }

  /** Writes what is buffered and closes, leaving no clean marker. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.write();
    this.closed = true;
    await this.enqueue(() => this.fh.close());
  }

  /** Closes and removes the queue's directory. */
  async destroy(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.closed) {
      this.closed = true;
      await this.enqueue(() => this.fh.close());
    }
    await fsp.rm(this.dir, { recursive: true, force: true });
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    const p = this.io.then(task);
    this.io = p.catch(() => undefined);
    return p;
  }

  private async writePending(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const buf = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    let off = 0;
    while (off < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, off, buf.length - off);
      off += bytesWritten;
    }
    this.fileBytes += buf.length;
    this.dirty = true;
  }
}
