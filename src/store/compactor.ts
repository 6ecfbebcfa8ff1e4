/**
 * When to compact and which files, and the compaction's place among the
 * store's other work (compaction.ts does the copying). As in the reference:
 * when garbage exceeds GARBAGE_FRACTION of the file bytes (and those exceed
 * two file limits), the eldest pair of neighbours whose live data fits one
 * file is combined, the current file never. Both files are locked first and
 * the compaction waits for their readers to leave; a remove of a record in
 * a locked file, and a contains of one, are deferred until it is over. Its
 * outcome goes to the front of the store's mailbox, which applies it.
 */
import { Index, MsgId } from '../index/types';
import { combineFiles, DamagedSegmentError } from './compaction';
import { FileSummary } from './file-summary';
import { FileTable } from './file-table';
import { HintChain } from './hint-chain';
import type { Logger } from '../util/logger';
import { SEGMENT_EXT } from './segment-file';

/** Compaction starts when garbage / file bytes exceeds this (and file bytes > 2 file limits). */
export const GARBAGE_FRACTION = 0.5;

/** How a compaction ended, posted to the front of the store's mailbox. */
export type CompactionEnd =
  | { kind: 'compacted'; src: FileSummary; dst: FileSummary; total: number }
  | { kind: 'compactionFailed'; src: FileSummary; dst: FileSummary }
  | { kind: 'compactionSkipped'; src: FileSummary; dst: FileSummary };

export interface CompactorHost {
  dir: string;
  index: Index;
  files: FileTable;
  fileSizeLimit: number;
  ioChunkSize: number;
  hints: HintChain;
  log: Logger;
  /** Whether a compaction may start (the store is not closing, crashed or failed). */
  mayStart(): boolean;
  crashed(): boolean;
  /** The error the store failed with, if it did (by another path while this compaction ran). */
  failure(): unknown;
  post(end: CompactionEnd): void;
  fail(e: unknown): void;
  onChecksumFailures(n: number): void;
}

/** Thrown by the copy's abort check once the store has crashed (a simulated kill). */
class Aborted extends Error {}

/** A remove put aside behind the compaction holding its file; D is the store's deferred lookup. */
export type Deferred<D> = { kind: 'remove'; id: MsgId } | D;

export class Compactor<D> {
  /** The files of the compaction running, if one is. */
  private active: { src: number; dst: number } | undefined;
  /** The running compaction, until its outcome is applied. */
  private runP: Promise<void> | undefined;
  /** Reads waiting for the running compaction to end. */
  private idleWaiters: Array<() => void> = [];
  /** Per locked file, the compaction waiting for its last reader to leave. */
  private readonly noReaderWaiters = new Map<number, () => void>();
  /** Operations put aside while the running compaction holds their file. */
  private deferredOps: Array<Deferred<D>> = [];

  constructor(private readonly host: CompactorHost) {}

  get isActive(): boolean {
    return this.active !== undefined;
  }

  /** Whether the running compaction holds `file`. */
  holds(file: number): boolean {
    const a = this.active;
    return a !== undefined && (file === a.src || file === a.dst);
  }

  /** The running compaction, if one runs. */
  get running(): Promise<void> | undefined {
    return this.runP;
  }

  get deferredCount(): number {
    return this.deferredOps.length;
  }

  defer(op: Deferred<D>): void {
    this.deferredOps.push(op);
  }

  /** The deferred operations, taken (a crash answers them). */
  takeDeferred(): Array<Deferred<D>> {
    const d = this.deferredOps;
    this.deferredOps = [];
    return d;
  }

  /** Resolves once no compaction runs. */
  idle(): Promise<void> {
    if (!this.active) return Promise.resolve();
    return new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** A reader left `fs`: the compaction that locked it may go on once it was the last. */
  readerLeft(fs: FileSummary): void {
    if (fs.readers === 0 && fs.locked) this.noReaderWaiters.get(fs.file)?.();
  }

  /**
   * Starts a compaction if the garbage warrants one and none runs. `anyGarbage`
   * (offline compaction, `warren compact`) drops the store-wide threshold: any
   * pair that fits in one file and holds garbage is combined.
   */
  maybeStart(anyGarbage = false): void {
    const h = this.host;
    if (this.active || !h.mayStart()) return;
    const limit = h.fileSizeLimit;
    if (!anyGarbage && !(h.files.fileBytes > 2 * limit && h.files.garbageRatio > GARBAGE_FRACTION)) return;
    let dst = h.files.eldest();
    while (dst && dst.right !== undefined) {
      const src = h.files.get(dst.right)!;
      if (src.right === undefined) return; // never the current file
      const garbage = dst.fileSize - dst.validTotalSize + (src.fileSize - src.validTotalSize);
      if (!dst.damaged && !src.damaged && dst.validTotalSize + src.validTotalSize <= limit && (!anyGarbage || garbage > 0)) {
        this.start(src, dst);
        return;
      }
      dst = src;
    }
  }

  /** The running compaction is over (its outcome applied): waiters released; returns what was deferred behind it. */
  end(): Array<Deferred<D>> {
    this.active = undefined;
    this.runP = undefined;
    const ws = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of ws) w();
    return this.takeDeferred();
  }

  private start(src: FileSummary, dst: FileSummary): void {
    const h = this.host;
    src.locked = true;
    dst.locked = true;
    this.active = { src: src.file, dst: dst.file };
    this.runP = (async () => {
      try {
        await this.waitNoReaders(src);
        await this.waitNoReaders(dst);
        // The destination changes: its hint goes first, for good, before any byte of it is written.
        await h.hints.remove(dst.file, true);
        const total = await combineFiles(
          {
            dir: h.dir,
            index: h.index,
            chunkSize: h.ioChunkSize,
            checkAbort: () => {
              if (h.crashed()) throw new Aborted();
              // A failed store deletes nothing, not even a source whose copies are all fsynced.
              if (h.failure() !== undefined) throw new Error('the store failed meanwhile: the compaction stops where it is');
            },
            onChecksumFailures: (n) => h.onChecksumFailures(n),
          },
          src,
          dst,
        );
        void h.hints.remove(src.file, false).catch(() => undefined);
        h.hints.fromScan(dst.file);
        h.post({ kind: 'compacted', src, dst, total });
      } catch (e) {
        if (e instanceof Aborted || h.crashed()) return;
        if (e instanceof DamagedSegmentError) {
          h.log('error', `compaction of ${src.file}${SEGMENT_EXT} into ${dst.file}${SEGMENT_EXT} not done: ${e.message}; the file is kept as it is and never compacted in this run, its intact records stay readable`);
          h.files.get(e.file)!.damaged = true;
          h.post({ kind: 'compactionSkipped', src, dst });
          return;
        }
        h.fail(e);
        h.post({ kind: 'compactionFailed', src, dst });
      }
    })();
  }

  private waitNoReaders(fs: FileSummary): Promise<void> {
    if (fs.readers === 0) return Promise.resolve();
    return new Promise<void>((resolve) =>
      this.noReaderWaiters.set(fs.file, () => {
        this.noReaderWaiters.delete(fs.file);
        resolve();
      }),
    );
  }
}
