/**
 * The message store: a TypeScript port of RabbitMQ's rabbit_msg_store (see
 * reference/rabbit_msg_store.erl), one per directory. docs/STORE.md is its
 * design essay; the invariants it keeps, in brief:
 *
 * - Nothing is confirmed before it is fsynced: a sync resolves only once the
 *   current file is fsynced past every listed message (files rolled or
 *   compacted were fsynced then).
 * - A record's bytes are dropped only once its reference count reached zero
 *   and every copy still wanted is fsynced elsewhere; a failed store deletes
 *   nothing.
 * - The file table's totals equal the sums over its files (file-table.ts).
 * - Operations posted to the mailbox apply in order (a contains never
 *   overtakes a preceding remove); compaction runs outside it, on two locked
 *   files, and its outcome is applied inside it (compactor.ts).
 * - Reads go straight to the caches or the files; a reader counted in a file
 *   keeps compaction out of it until it leaves (reader.ts).
 *
 * The parts: options.ts (what a store opens with), startup.ts (clean or
 * rebuild), file-table.ts, mailbox.ts, reader.ts, compactor.ts,
 * hint-chain.ts, store-client.ts. What stays here is the store's state, the
 * handler of each mailbox operation (write, remove, sync, contains, a
 * compaction's outcome) and open / close / crash: they all edit that one
 * state, and the reference keeps them in one module for the same reason.
 */
import { promises as fsp } from 'fs';
import { Index, MsgId, MsgLocation, NOT_IN_MEMORY } from '../index/types';
import { Compactor, CompactionEnd } from './compactor';
import { DedupCache } from './dedup-cache';
import { InvalidArgumentError, StoreClosedError, StoreError, StoreFailedError } from './errors';
import { FileSummary, storeFileSummary } from './file-summary';
import { FileTable } from './file-table';
import { fsyncDir } from './fs-util';
import { HandleCache } from './handles';
import { HintChain } from './hint-chain';
import { HINT_EXT, HintBuilder, removeOrphanHints } from './hint-file';
import { Mailbox } from './mailbox';
import { nextTurn, turnBudget } from '../util/turn-budget';
import { checkId, checkIds, keyOf } from './message-id';
import { MessageStoreOptions, resolveOptions, StoreTuning } from './options';
import { encodeHeader, MAX_BODY_SIZE } from './record-codec';
import type { Logger } from '../util/logger';
import { storeRecoveryTerms } from './recovery';
import { listNumbered, segmentPath, SegmentWriter } from './segment-file';
import { DiskReads, readBody, ReaderHost, ReadSources } from './reader';
import { startState } from './startup';
import { ClientPort, StoreClient } from './store-client';
import { SyncBatcher } from './sync-batcher';
import { WriteCache } from './write-cache';

export interface StoreStats {
  indexKind: string;
  /** The index implementation's own figures, if it keeps any. */
  index?: Readonly<Record<string, number | boolean>>;
  successfullyRecovered: boolean;
  /** Segment files, and the one being appended to. */
  files: number;
  currentFile: number;
  /** Live messages (index entries). */
  messages: number;
  validBytes: number;
  fileBytes: number;
  /** (fileBytes - validBytes) / fileBytes, 0 when empty. */
  garbageRatio: number;
  compactions: number;
  compactionActive: boolean;
  reclaimedBytes: number;
  /** fsyncs of the current file made for sync requests and rolls. */
  syncs: number;
  /** Records that failed their checksum (scans, compactions, reads). */
  checksumFailures: number;
  /** Bytes skipped by scans as damaged. */
  skippedBytes: number;
  /** Bytes of the current file that the last (non-clean) open found no intact record in: writes in flight at the crash (or damage), covered by fillers or cut (torn-writes.ts); not counted as checksum failures or skipped bytes. */
  tornBytes: number;
  /** Files whose records the last open (non-clean) took from their hint instead of a scan, and files it scanned. */
  openHintedFiles: number;
  openScannedFiles: number;
  /** Hint files written since the open. */
  hintsWritten: number;
  /** Hint writes and deletions asked and not yet done. */
  hintSteps: number;
  writes: number;
  reads: number;
  /** Reads by where they found the body (a read of a message the store no longer holds counts nowhere). */
  readSources: ReadSources;
  /** The preads that served the reads from files (records read together count once). */
  fileReads: number;
  removes: number;
  /** Operations waiting in the store's queue, and deferred behind a compaction. */
  pendingOps: number;
  deferredOps: number;
  pendingSyncs: number;
  writeCacheEntries: number;
  writeCacheBytes: number;
  dedupEntries: number;
  openHandles: number;
}

type ContainsOp = { kind: 'contains'; id: MsgId; resolve: (v: boolean) => void; reject: (e: unknown) => void };

type Op =
  | { kind: 'write'; id: MsgId; key: string; body: Buffer }
  | { kind: 'remove'; ids: MsgId[] }
  /** `to`: `disk` resolves after an fsync past the messages, `kernel` after their write() (durability `write`). */
  | { kind: 'sync'; ids: MsgId[]; to: 'disk' | 'kernel'; resolve: () => void; reject: (e: unknown) => void }
  | ContainsOp
  | CompactionEnd
  | { kind: 'clientDelete'; ref: string }
  | { kind: 'barrier'; resolve: () => void; reject: (e: unknown) => void };

/** Queued contains answered together at most (see handleContainsBatch). */
const CONTAINS_BATCH = 1024;

const isContains = (op: Op): op is ContainsOp => op.kind === 'contains';

export class MessageStore implements ClientPort {
  /** Told the duration (seconds) of every group-commit fsync that succeeded: the sidecar's fsync latency histogram. */
  onSync?: (seconds: number) => void;
  /** File number → summary, with the live and file byte totals. */
  private readonly files: FileTable;
  /** The current file, appended to (its number is `writer.file`). */
  private writer!: SegmentWriter;
  /**
   * The current file's records as appended, its hint once it rolls (no scan
   * of the file just written). Undefined for a file this store did not start
   * (it resumed appending after an open): that one is scanned at its roll.
   */
  private appended: HintBuilder | undefined;
  /** Bodies written to the current file and not yet removed or rolled past. */
  private readonly writeCache = new WriteCache();
  /** Bodies of multiply-referenced messages shared between readers. */
  private readonly dedup = new DedupCache();
  /** Shared, bounded read handles. */
  private readonly handles: HandleCache;
  /** Group commit of pending syncs. */
  private readonly batcher: SyncBatcher;
  /** Refs of registered clients not deleted, recorded at a clean close. */
  private readonly clientRefs: Set<string>;

  /** Operations applied one at a time, in order (the gen_server's mailbox). */
  private readonly mailbox: Mailbox<Op>;

  /** Which files to compact, the running compaction, and what waits behind it. */
  private readonly compactor: Compactor<ContainsOp>;
  /** Hint-file writes and deletions, in order. */
  private readonly hints: HintChain;
  /** What the read path uses of the store. */
  private readonly readPath: ReaderHost;
  /** Referenced ids the non-clean open found no record of, until takeUnfound(). */
  private unfoundAtOpen?: Set<string>;

  /** Lifecycle; `failure` is the error that failed the store, if one did. */
  private closing = false;
  private closed = false;
  private crashed = false;
  private backgroundSync: NodeJS.Timeout | undefined;
  private failure: unknown;

  private readonly counters = {
    compactions: 0,
    reclaimedBytes: 0,
    checksumFailures: 0,
    skippedBytes: 0,
    tornBytes: 0,
    openHintedFiles: 0,
    openScannedFiles: 0,
    writes: 0,
    reads: 0,
    removes: 0,
  };

  private constructor(
    readonly dir: string,
    readonly fileSizeLimit: number,
    private readonly index: Index,
    /** True only if the previous shutdown was clean and the client refs match. */
    readonly successfullyRecovered: boolean,
    clientRefs: Iterable<string>,
    summaries: Iterable<FileSummary>,
    private readonly log: Logger,
    private readonly opts: StoreTuning,
    maxOpenFiles: number,
    writeHints: boolean,
  ) {
    this.clientRefs = new Set(clientRefs);
    this.files = new FileTable(summaries);
    this.mailbox = new Mailbox<Op>(
      (op) => this.apply(op),
      () => this.crashed,
    );
    this.handles = new HandleCache(dir, maxOpenFiles);
    // A failed group commit fails the store: the writer's chain is failed for good, and no later fsync may confirm.
    this.batcher = new SyncBatcher(
      async () => {
        try {
          const t0 = process.hrtime.bigint();
          await this.writer.sync();
          this.onSync?.(Number(process.hrtime.bigint() - t0) / 1e9);
        } catch (e) {
          this.fail(e);
          throw e;
        }
      },
      opts.syncIntervalMs,
      opts.syncBatchSize,
    );
    this.hints = new HintChain({
      dir,
      ioChunkSize: opts.ioChunkSize,
      enabled: writeHints,
      // Not while closing: a clean stop does not wait for them (the next start scans what has none).
      wanted: (file) => !this.crashed && !this.closing && this.failure === undefined && this.files.has(file),
      fail: (e) => this.fail(e),
      log,
    });
    this.compactor = new Compactor<ContainsOp>({
      dir,
      index,
      files: this.files,
      fileSizeLimit,
      ioChunkSize: opts.ioChunkSize,
      hints: this.hints,
      log,
      mayStart: () => !this.closing && !this.crashed && this.failure === undefined,
      crashed: () => this.crashed,
      failure: () => this.failure,
      post: (end) => this.post(end, true),
      fail: (e) => this.fail(e),
      onChecksumFailures: (n) => {
        this.counters.checksumFailures += n;
      },
    });
    this.readPath = {
      index,
      files: this.files,
      compactor: this.compactor,
      dedup: this.dedup,
      writeCache: this.writeCache,
      handles: this.handles,
      diskReads: new DiskReads(this.handles),
      writer: () => this.writer,
      log,
      onDamaged: () => {
        this.counters.checksumFailures++;
      },
      readSources: { dedup: 0, writeCache: 0, file: 0 },
    };
  }

  static async open(options: MessageStoreOptions): Promise<MessageStore> {
    const o = resolveOptions(options);
    const started = Date.now();
    const s = await startState(o);
    await removeOrphanHints(o.dir, s.summaries.map((f) => f.file));

    const store = new MessageStore(o.dir, o.fileSizeLimit, s.index, s.clean, s.clean ? o.clientRefs! : [], s.summaries, o.log, o.tuning, o.maxOpenFiles, o.writeHints);
    store.counters.checksumFailures = s.checksumFailures;
    store.counters.skippedBytes = s.skippedBytes;
    store.counters.tornBytes = s.tornBytes;
    store.counters.openHintedFiles = s.hintedFiles;
    store.counters.openScannedFiles = s.scannedFiles;
    store.unfoundAtOpen = s.unfound;
    if (s.currentSize === 0 && store.hints.enabled) store.appended = new HintBuilder();
    store.writer = await SegmentWriter.open(o.dir, s.current, s.currentSize, store.writerOptions());
    await fsyncDir(o.dir);
    // Files without a hint get one in the background (those a rebuild just
    // scanned from that scan; after a clean start, from a scan of their own),
    // so that the next non-clean start reads the hints instead.
    if (store.hints.enabled) {
      for (const h of s.hints) store.hints.write(h.file, h.data);
      if (s.clean) {
        const have = new Set(await listNumbered(o.dir, HINT_EXT));
        for (const f of s.summaries) if (f.file !== s.current && !have.has(f.file)) store.hints.fromScan(f.file);
      }
    }
    o.log(
      'info',
      `opened ${s.clean ? 'clean' : 'after a non-clean shutdown'} in ${Date.now() - started} ms: ${s.summaries.length} files, ` +
        `${s.index.size()} messages, ${store.files.validBytes} valid of ${store.files.fileBytes} bytes, index ${s.index.kind}`,
    );
    store.compactor.maybeStart();
    return store;
  }

  // ---------------------------------------------------------------- clients

  /** Registers a client (a queue); its ref is recorded at clean shutdown unless it is deleted. */
  client(ref: string): StoreClient {
    this.checkOpen();
    if (typeof ref !== 'string') throw new InvalidArgumentError('client ref must be a string');
    this.clientRefs.add(ref);
    return new StoreClient(this, ref);
  }

  /** Whether the store holds the message (after every operation posted before this call). */
  contains(id: MsgId): Promise<boolean> {
    try {
      this.checkOpen();
      checkId(id);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<boolean>((resolve, reject) => this.post({ kind: 'contains', id: Buffer.from(id), resolve, reject }));
  }

  /** @internal */
  writeMessage(id: MsgId, body: Buffer): void {
    this.checkWritable();
    checkId(id);
    if (!Buffer.isBuffer(body)) throw new InvalidArgumentError('body must be a Buffer');
    if (body.length > MAX_BODY_SIZE) throw new InvalidArgumentError(`body of ${body.length} bytes is too large`);
    const key = keyOf(id);
    this.writeCache.add(key, body);
    this.counters.writes++;
    this.post({ kind: 'write', id: Buffer.from(id), key, body });
  }

  /** @internal */
  removeMessages(ids: MsgId[]): void {
    this.checkOpen();
    checkIds(ids);
    if (ids.length === 0) return;
    this.counters.removes += ids.length;
    this.post({ kind: 'remove', ids: ids.map((id) => Buffer.from(id)) });
  }

  /** @internal */
  syncMessages(ids: MsgId[], to: 'disk' | 'kernel' = 'disk'): Promise<void> {
    try {
      this.checkOpen();
      checkIds(ids);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.failure !== undefined) return Promise.reject(new StoreFailedError(this.failure));
    return new Promise<void>((resolve, reject) => this.post({ kind: 'sync', ids: ids.map((id) => Buffer.from(id)), to, resolve, reject }));
  }

  /** @internal Resolves once every operation posted before it has been applied. */
  barrier(): Promise<void> {
    return new Promise<void>((resolve, reject) => this.post({ kind: 'barrier', resolve, reject }));
  }

  /** @internal */
  deleteClient(ref: string): void {
    this.post({ kind: 'clientDelete', ref });
  }

  /** @internal Straight to the caches or the files, outside the mailbox (reader.ts). Bad input or a closed store rejects; it never throws. */
  async readMessage(id: MsgId): Promise<Buffer | undefined> {
    this.checkOpen();
    checkId(id);
    this.counters.reads++;
    return readBody(this.readPath, id);
  }

  // ---------------------------------------------------------------- mailbox

  private post(op: Op, front = false): void {
    this.mailbox.post(op, front);
  }

  /**
   * Applies one operation; a contains takes the contains queued right behind
   * it along (a recovering queue asks for a segment's worth at once). A
   * failure rejects the operations applied and fails the store.
   */
  private apply(op: Op): Promise<void> | void {
    const batch = op.kind === 'contains' ? [op, ...this.mailbox.takeWhile(isContains, CONTAINS_BATCH - 1)] : undefined;
    const failed = (e: unknown): void => {
      for (const o of batch ?? [op]) if ('reject' in o) o.reject(e);
      this.fail(e);
    };
    try {
      const pending = batch ? this.handleContainsBatch(batch) : this.handle(op);
      if (pending) return pending.catch(failed);
    } catch (e) {
      failed(e);
    }
  }

  /** Applies `op`: at once when the index can answer from memory (most writes and removes), else a promise. */
  private handle(op: Op): Promise<void> | void {
    switch (op.kind) {
      case 'write':
        return this.handleWrite(op.id, op.key, op.body);
      case 'remove':
        return this.handleRemove(op.ids, 0);
      case 'sync':
        return this.handleSync(op);
      case 'contains':
        return this.handleContains(op);
      case 'compacted':
        return this.handleCompacted(op.src, op.dst, op.total);
      case 'compactionFailed':
        return this.handleCompactionFailed(op.src, op.dst);
      case 'compactionSkipped':
        return this.handleCompactionSkipped(op.src, op.dst);
      case 'clientDelete':
        this.clientRefs.delete(op.ref);
        return;
      case 'barrier':
        op.resolve();
        return;
    }
  }

  /** Removes ids[from..] in turn, waiting only for those that need it, and for the next turn once this one's budget is spent (a purge's ids come in one operation). */
  private handleRemove(ids: MsgId[], from: number): Promise<void> | void {
    for (let i = from; i < ids.length; i++) {
      if (i > from && turnBudget.spent()) return nextTurn().then(() => this.handleRemove(ids, i));
      const pending = this.removeMessage(ids[i]);
      if (pending) return pending.then(() => this.handleRemove(ids, i + 1));
    }
    this.compactor.maybeStart();
  }

  private handleWrite(id: MsgId, key: string, body: Buffer): Promise<void> | void {
    this.writeCache.written(key);
    return this.located(id, (loc, exact) => this.writeLocated(id, key, body, loc, exact));
  }

  /**
   * Runs `then` with id's location: at once when the index answers from
   * memory (`exact`: read in this same synchronous run, so nothing can have
   * moved the record since), else after its lookup.
   */
  private located(id: MsgId, then: (loc: MsgLocation | undefined, exact: boolean) => Promise<void> | void): Promise<void> | void {
    const now = this.index.lookupNow(id);
    if (now === NOT_IN_MEMORY) return this.index.lookup(id).then((loc) => then(loc, false));
    return then(now, true);
  }

  /** Changes only the ref count: a concurrent compaction may be moving the record (one located `exact`ly cannot have moved). */
  private addRefs(id: MsgId, loc: MsgLocation, delta: number, exact: boolean): Promise<void> | void {
    if (exact) this.index.update(id, { ...loc, refCount: loc.refCount + delta });
    else return this.index.updateFields(id, { refCount: loc.refCount + delta });
  }

  private writeLocated(id: MsgId, key: string, body: Buffer, loc: MsgLocation | undefined, exact: boolean): Promise<void> | void {
    if (loc) return this.addRefs(id, loc, 1, exact);
    if (this.failure !== undefined) return;
    const header = encodeHeader(id, body);
    const totalSize = header.length + body.length;
    const w = this.writer;
    const offset = w.append(header, body);
    this.writeCache.appended(key, w.file, offset + totalSize);
    this.appended?.add(id, offset, totalSize);
    this.index.insert(id, { refCount: 1, file: w.file, offset, totalSize });
    this.files.appended(this.files.get(w.file)!, offset, totalSize);
    this.syncLater();
    if (w.size >= this.fileSizeLimit) return this.roll();
  }

  /** With `backgroundSyncMs` (durability `write`): an fsync that long after the first unsynced append. */
  private syncLater(): void {
    const ms = this.opts.backgroundSyncMs;
    if (ms === 0 || this.backgroundSync) return;
    this.backgroundSync = setTimeout(() => {
      this.backgroundSync = undefined;
      if (this.closing || this.crashed || this.failure !== undefined) return;
      this.batcher.syncNow().catch(() => undefined); // a failed fsync fails the store (the batcher's doSync)
    }, ms);
  }

  /** How every current file is written: its buffer, a failed write failing the store, the write cache told what reached the OS. */
  private writerOptions(): Parameters<typeof SegmentWriter.open>[3] {
    return {
      bufferLimit: this.opts.writeBufferSize,
      onError: (e) => this.fail(e),
      onWritten: (file, offset) => this.writeCache.reached(file, offset),
    };
  }

  private async roll(): Promise<void> {
    await this.batcher.syncNow();
    const old = this.writer;
    const next = old.file + 1;
    const w = await SegmentWriter.open(this.dir, next, 0, this.writerOptions());
    await fsyncDir(this.dir);
    this.files.rolled(old.file, next);
    this.writer = w;
    const appended = this.appended;
    this.appended = this.hints.enabled ? new HintBuilder() : undefined;
    await old.close();
    // Fsynced above and never appended to again: its hint lists what was appended.
    if (appended) this.hints.write(old.file, appended.finish(old.file, old.size));
    else this.hints.fromScan(old.file);
    this.writeCache.dropAllIdle();
    this.compactor.maybeStart();
  }

  private removeMessage(id: MsgId): Promise<void> | void {
    // A failed store's counts may be wrong (a compaction that failed half-way
    // leaves index entries pointing at copies that are not all there): no file
    // is deleted on their word. The next open rebuilds them from the queues.
    if (this.failure !== undefined) return;
    return this.located(id, (loc, exact) => this.removeLocated(id, loc, exact));
  }

  private removeLocated(id: MsgId, loc: MsgLocation | undefined, exact: boolean): Promise<void> | void {
    if (this.failure !== undefined) return;
    if (!loc) {
      this.log('warn', `remove of unknown message ${id.toString('hex')} ignored`);
      return;
    }
    if (loc.refCount > 1) return this.addRefs(id, loc, -1, exact);
    const key = keyOf(id);
    const fs = this.files.get(loc.file);
    if (fs?.locked) {
      this.compactor.defer({ kind: 'remove', id });
      return;
    }
    this.dedup.delete(key);
    this.index.delete(id);
    this.writeCache.dropIfIdle(key);
    if (!fs) return;
    this.files.released(fs, loc.offset, loc.totalSize);
    if (fs.file !== this.writer.file && fs.validTotalSize === 0 && !fs.locked) return this.deleteFileIfEmpty(fs);
  }

  private async deleteFileIfEmpty(fs: FileSummary): Promise<void> {
    if (fs.file === this.writer.file || fs.validTotalSize > 0 || fs.locked) return;
    this.files.unlink(fs);
    this.handles.invalidate(fs.file);
    await fsp.rm(segmentPath(this.dir, fs.file), { force: true });
    void this.hints.remove(fs.file, false).catch(() => undefined);
  }

  private async handleSync(op: Extract<Op, { kind: 'sync' }>): Promise<void> {
    if (this.failure !== undefined) {
      op.reject(new StoreFailedError(this.failure));
      return;
    }
    const w = this.writer;
    const reached = op.to === 'disk' ? w.syncedOffset : w.writtenOffset;
    let needed = false;
    for (const id of op.ids) {
      const loc = await this.index.lookup(id);
      // anything outside the current file was fsynced when its file rolled or was compacted
      if (loc && loc.file === w.file && loc.offset + loc.totalSize > reached) {
        needed = true;
        break;
      }
    }
    const failed = (e: unknown): void => op.reject(e instanceof StoreError ? e : new StoreFailedError(e));
    if (!needed) op.resolve();
    else if (op.to === 'disk') this.batcher.wait().then(op.resolve, failed);
    else {
      // The writer's chain is serial and its failure sticky; the store fails with it.
      w.flush().then(op.resolve, (e: unknown) => {
        this.fail(e);
        failed(e);
      });
    }
  }

  private async handleContains(op: ContainsOp): Promise<void> {
    this.answerContains(op, await this.index.lookup(op.id));
  }

  /**
   * Lookups only, with no write queued between them, so they may run at once:
   * an index that goes to disk reads them in one trip instead of one each.
   */
  private async handleContainsBatch(ops: ContainsOp[]): Promise<void> {
    if (ops.length === 1) return this.handleContains(ops[0]);
    const locs = await Promise.all(ops.map((op) => this.index.lookup(op.id)));
    for (let i = 0; i < ops.length; i++) this.answerContains(ops[i], locs[i]);
  }

  private answerContains(op: ContainsOp, loc: MsgLocation | undefined): void {
    if (!loc) return op.resolve(false);
    if (this.compactor.holds(loc.file)) {
      this.compactor.defer(op);
      return;
    }
    op.resolve(true);
  }

  // ---------------------------------------------------------------- compaction's outcome

  /**
   * A compaction that failed (the store has failed with it): nothing moved,
   * both files stay as they were and are unlocked; waiters are released.
   * Removes deferred behind it are dropped (the store takes no writes now; the
   * next open rebuilds the reference counts); lookups deferred are answered.
   */
  private async handleCompactionFailed(src: FileSummary, dst: FileSummary): Promise<void> {
    src.locked = false;
    dst.locked = false;
    for (const d of this.compactor.end()) if (d.kind === 'contains') await this.handleContains(d);
  }

  /** A compaction that found damage before it wrote anything: both files as they were, the deferred operations done now. */
  private async handleCompactionSkipped(src: FileSummary, dst: FileSummary): Promise<void> {
    src.locked = false;
    dst.locked = false;
    await this.applyDeferred();
  }

  /**
   * The compaction is done and fsynced, the source deleted. Applied in the
   * mailbox, at its front: the table takes the new sizes before any operation
   * behind it looks at them, then what was deferred runs, in its order.
   */
  private async handleCompacted(src: FileSummary, dst: FileSummary, total: number): Promise<void> {
    this.handles.invalidate(src.file);
    this.handles.invalidate(dst.file);
    const reclaimed = this.files.combined(src, dst, total);
    dst.locked = false;
    this.counters.compactions++;
    this.counters.reclaimedBytes += reclaimed;
    await this.applyDeferred();
    this.compactor.maybeStart();
  }

  private async applyDeferred(): Promise<void> {
    for (const d of this.compactor.end()) {
      if (d.kind === 'remove') await this.removeMessage(d.id);
      else await this.handleContains(d);
    }
  }

  // ---------------------------------------------------------------- lifecycle

  private fail(e: unknown): void {
    if (this.failure !== undefined || this.crashed) return;
    this.failure = e;
    this.log('error', `store failed, no further writes will be accepted: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    this.batcher.failAll(new StoreFailedError(e));
  }

  private checkOpen(): void {
    if (this.closing || this.closed || this.crashed) throw new StoreClosedError();
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.failure !== undefined) throw new StoreFailedError(this.failure);
  }

  /** @internal */
  assertOpen(): void {
    this.checkOpen();
  }

  /**
   * After a non-clean open that counted its references in memory: a test for
   * the ids its deltas referenced that no segment file held. The store holds
   * every other referenced id, until a client removes that reference. Given
   * once (the caller keeps it as long as it needs it); undefined after a clean
   * open, or when the counts spilled to the index (then it is not known).
   */
  takeUnfound(): ((id: MsgId) => boolean) | undefined {
    const s = this.unfoundAtOpen;
    this.unfoundAtOpen = undefined;
    return s && ((id) => s.has(keyOf(id)));
  }

  /** The error that failed the store (a write or fsync), if one did: it accepts no writes after it. */
  get failed(): Error | undefined {
    if (this.failure === undefined) return undefined;
    return this.failure instanceof Error ? this.failure : new Error(String(this.failure));
  }

  /** Waits for the mailbox to drain and any running compaction to end, until neither has more. */
  private async settle(): Promise<void> {
    for (;;) {
      // Wait for the pump to go idle (a barrier would keep it busy forever).
      await this.mailbox.drain();
      const gc = this.compactor.running;
      if (gc) {
        await gc;
        continue;
      }
      if (!this.mailbox.idle) continue;
      return;
    }
  }

  /**
   * Clean shutdown: applies pending operations, lets a running compaction
   * finish, fsyncs, and writes the file summary, the index and the recovery
   * terms (the refs of every client registered and not deleted).
   */
  async close(): Promise<void> {
    if (this.closing || this.closed || this.crashed) return;
    this.closing = true;
    clearTimeout(this.backgroundSync);
    await this.settle();
    await this.hints.idle();
    let ok = this.failure === undefined;
    try {
      await this.batcher.syncNow();
      await this.writer.close();
    } catch (e) {
      this.fail(e);
      ok = false;
      await this.writer.abandon();
    }
    await this.handles.closeAll();
    if (ok) {
      try {
        await storeFileSummary(this.dir, this.files.sorted());
        await this.index.terminate();
        await storeRecoveryTerms(this.dir, { clientRefs: [...this.clientRefs].sort(), indexKind: this.index.kind });
      } catch (e) {
        // The recovery terms are written last: without them the next start rebuilds.
        this.fail(e);
        await this.index.abandon().catch(() => undefined);
        this.log('error', 'the clean state could not be written: the next start will rebuild');
        this.closed = true;
        throw e;
      }
      this.log('info', `closed cleanly: ${this.files.size} files, ${this.index.size()} messages`);
    } else {
      // Nothing of it is trusted at the next open; the index only has to let go of its files.
      await this.index.abandon().catch((e: Error) => this.log('warn', `index not released cleanly: ${e.message}`));
      this.log('warn', 'closed after a failure: the next start will rebuild');
    }
    this.closed = true;
  }

  /**
   * For tests and crash harnesses: stop as the process would if it were
   * killed. Nothing more is written; appends not yet fsynced are dropped from
   * the current file (as a power loss may do); a running compaction stops at
   * its next step, leaving its files as they are.
   */
  async simulateCrash(): Promise<void> {
    if (this.closed || this.crashed) return;
    this.crashed = true;
    clearTimeout(this.backgroundSync);
    this.batcher.failAll(new StoreClosedError());
    for (const op of this.mailbox.waiting()) if ('reject' in op) op.reject(new StoreClosedError());
    for (const d of this.compactor.takeDeferred()) if (d.kind === 'contains') d.reject(new StoreClosedError());
    await this.compactor.running?.catch(() => undefined);
    await this.hints.idle();
    const w = this.writer;
    const synced = w.syncedOffset;
    await w.abandon();
    await this.handles.closeAll();
    await fsp.truncate(segmentPath(this.dir, w.file), synced).catch(() => undefined);
    await this.index.abandon().catch(() => undefined);
    this.closed = true;
  }

  stats(): StoreStats {
    return {
      indexKind: this.index.kind,
      index: this.index.stats?.(),
      successfullyRecovered: this.successfullyRecovered,
      files: this.files.size,
      currentFile: this.writer.file,
      messages: this.index.size(),
      validBytes: this.files.validBytes,
      fileBytes: this.files.fileBytes,
      garbageRatio: this.files.garbageRatio,
      compactions: this.counters.compactions,
      compactionActive: this.compactor.isActive,
      reclaimedBytes: this.counters.reclaimedBytes,
      syncs: this.batcher.syncs,
      checksumFailures: this.counters.checksumFailures,
      skippedBytes: this.counters.skippedBytes,
      tornBytes: this.counters.tornBytes,
      openHintedFiles: this.counters.openHintedFiles,
      openScannedFiles: this.counters.openScannedFiles,
      hintsWritten: this.hints.written,
      hintSteps: this.hints.pending,
      writes: this.counters.writes,
      reads: this.counters.reads,
      readSources: { ...this.readPath.readSources },
      fileReads: this.readPath.diskReads.reads,
      removes: this.counters.removes,
      pendingOps: this.mailbox.pending,
      deferredOps: this.compactor.deferredCount,
      pendingSyncs: this.batcher.pending,
      writeCacheEntries: this.writeCache.size,
      writeCacheBytes: this.writeCache.bytes,
      dedupEntries: this.dedup.size,
      openHandles: this.handles.openCount,
    };
  }

  /** The file summary, ascending (for tests and `warren inspect`). */
  fileSummaries(): FileSummary[] {
    return this.files.sorted().map((s) => ({ ...s }));
  }

  /** Every index entry (for tests and verification). */
  indexEntries(): AsyncIterable<[MsgId, MsgLocation]> {
    return this.index.entries();
  }

  /**
   * Offline compaction (`warren compact`): combines pairs of files, whatever
   * the store-wide garbage ratio, until no pair that fits in one file holds
   * garbage. The current file is never compacted. Resolves with the number
   * of compactions run; `onStep` is told after each.
   */
  async compactAll(onStep?: (done: number) => void): Promise<number> {
    this.checkWritable();
    let done = 0;
    for (;;) {
      await this.settle();
      const before = this.counters.compactions;
      this.compactor.maybeStart(true);
      if (!this.compactor.isActive) break;
      await this.settle();
      if (this.failure !== undefined) throw this.failed!;
      // A pair skipped for damage is marked so and not picked again: the loop ends.
      if (this.counters.compactions === before) continue;
      done += this.counters.compactions - before;
      onStep?.(done);
    }
    await this.hints.idle();
    return done;
  }

  /** Resolves once every operation posted so far has been applied, no compaction runs and no hint step waits. */
  async quiesce(): Promise<void> {
    for (;;) {
      await this.settle();
      await this.hints.idle();
      if (this.hints.pending === 0 && this.mailbox.idle) return;
    }
  }
}
