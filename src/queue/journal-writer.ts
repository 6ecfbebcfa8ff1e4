/**
 * The write side of a queue's journal, and the one line every file operation
 * of its index waits in. Records are buffered as they are recorded,
 * appended by write() and also fdatasynced by sync() (the queue's group
 * commit calls one of the two); journal writes, folds and segment reads run
 * one at a time (`run`). A failed write, fsync or fold fails it for good:
 * every later task is refused with the same QueueIndexFailedError.
 */
import { JournalFile } from './journal-files';
import type { Logger } from '../util/logger';
import { SerialQueue } from '../util/serial-queue';

/** The index failed a write, fsync or fold: it refuses everything after. `code` is the system error's (ENOSPC, EIO, ...). */
export class QueueIndexFailedError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'QueueIndexFailedError';
  }
}

export class JournalWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Serializes every file operation: journal writes, folds, segment reads. */
  private readonly io = new SerialQueue();
  /** An I/O failure of a write, fsync or fold: the index no longer knows what is durable. */
  private failed: Error | null = null;

  constructor(
    private readonly dir: string,
    private readonly file: JournalFile,
    private readonly log: Logger,
  ) {}

  /** Buffers an encoded record; the next write() or sync() appends it. */
  push(rec: Buffer): void {
    this.pending.push(rec);
    this.pendingBytes += rec.length;
  }

  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  /** Forgets the buffered records: a fold holds them in the segments now, or the queue is being destroyed. */
  discard(): void {
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Writes buffered records to the file (no fsync): enough to survive a process kill. */
  write(): Promise<void> {
    return this.run(() => this.writePending());
  }

  /**
   * Writes buffered records and fsyncs: what was recorded before this call is
   * durable when it resolves. A failed fsync fails the index for good: the
   * kernel may have dropped the pages it could not write, so no later fsync
   * could prove them durable (the fsyncgate lesson).
   */
  sync(): Promise<void> {
    return this.run(async () => {
      await this.writePending();
      try {
        await this.file.datasync();
      } catch (e) {
        throw this.fail(e as Error, 'fsync');
      }
    });
  }

  /** Empties the journal file and fdatasyncs it: a fold's last step, once the segments hold everything. */
  async truncate(): Promise<void> {
    await this.file.truncate(0);
    await this.file.datasync();
  }

  /** Makes the index fail for good with `e`; returns the error to throw. */
  fail(e: Error, what: string): Error {
    if (!this.failed) {
      this.failed = new QueueIndexFailedError(`queue index ${this.dir}: ${what} failed: ${e.message}`, (e as NodeJS.ErrnoException).code);
      this.log('error', this.failed.message);
    }
    return this.failed;
  }

  /** The error that failed the index, if one did. */
  get failure(): Error | null {
    return this.failed;
  }

  /** Runs `task` after every file operation given before it, unless the index has failed. */
  run<T>(task: () => Promise<T>): Promise<T> {
    return this.io.run(() => {
      if (this.failed) throw this.failed;
      return task();
    });
  }

  /** Resolves once every task given so far has settled. */
  idle(): Promise<void> {
    return this.io.idle();
  }

  close(): Promise<void> {
    return this.file.close();
  }

  /**
   * Appends the buffered records. They stay buffered until the write
   * succeeded; a failed write (which may have left part of a record in the
   * file) fails the index, so nothing is ever appended behind a torn record
   * in this session, and the next open cuts it.
   */
  private async writePending(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const n = this.pending.length;
    const buf = Buffer.concat(this.pending, this.pendingBytes);
    let off = 0;
    try {
      while (off < buf.length) {
        const { bytesWritten } = await this.file.write(buf, off, buf.length - off);
        off += bytesWritten;
      }
    } catch (e) {
      throw this.fail(e as Error, `journal write (${off} of ${buf.length} bytes written)`);
    }
    this.pending.splice(0, n);
    this.pendingBytes -= buf.length;
  }
}
