/**
 * The message store: a TypeScript port of RabbitMQ's rabbit_msg_store (see
 * docs/../reference/rabbit_msg_store.erl), one per directory.
 *
 * As in the reference, clients write into the current file's write-back cache
 * and post the write to the store's serial "mailbox"; removes, syncs, contains
 * and compaction completions go through the same mailbox, so they apply in
 * order (a contains never overtakes a preceding remove). Reads go straight to
 * the caches or the files, coordinating with a concurrent compaction through
 * the file summary's `locked` flag and `readers` count.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { Index, IndexFactory, MsgId, MsgLocation } from '../index/types';
import { combineFiles, DamagedSegmentError } from './compaction';
import { DedupCache } from './dedup-cache';
import {
  ClientTerminatedError,
  InvalidArgumentError,
  InvalidIdError,
  StoreClosedError,
  StoreError,
  StoreFailedError,
} from './errors';
import { FileSummary, newSummary, recoverFileSummary, storeFileSummary } from './file-summary';
import { fsyncDir } from './fs-util';
import { HandleCache } from './handles';
import { encodeHint, HINT_EXT, removeHint, removeOrphanHints, writeHint } from './hint-file';
import { resolveIndex } from './index-registry';
import { decodeRecord, encodeHeader, ID_SIZE, MAX_BODY_SIZE } from './record-codec';
import {
  CountedRefs,
  countMsgRefs,
  readRecoveryTerms,
  rebuildFromSegments,
  recoverCrashedCompactions,
  storeRecoveryTerms,
  StoreLogger,
} from './recovery';
import { listNumbered, segmentPath, SEGMENT_EXT, SegmentWriter, TMP_EXT } from './segment-file';
import { scanSegment } from './segment-scanner';
import { SyncBatcher } from './sync-batcher';
import { WriteCache } from './write-cache';

export type { StoreLogger } from './recovery';

/** Compaction starts when garbage / file bytes exceeds this (and file bytes > 2 file limits). */
export const GARBAGE_FRACTION = 0.5;
export const DEFAULT_FILE_SIZE_LIMIT = 16 * 1024 * 1024;

export interface MessageStoreOptions {
  /** Directory of this store (one store per directory). */
  dir: string;
  /** Segment file size limit in bytes (default 16 MiB). */
  fileSizeLimit?: number;
  /** 'memory' (default), another registered name, or a factory. */
  index?: string | IndexFactory;
  /** undefined: start empty (the directory is wiped); else the clients expected back. */
  clientRefs?: readonly string[];
  /**
   * Whether files that stop changing get a hint file (default true), which a
   * non-clean start reads instead of scanning the file. A store wiped at every
   * start (transient bodies) has no use for them.
   */
  writeHints?: boolean;
  /** Ref-count deltas, consumed only on a non-clean start. */
  refDeltas?: () => AsyncIterable<[id: Buffer, delta: number]>;
  log?: StoreLogger;
  /** Longest wait before a group fsync (default 5 ms). */
  syncIntervalMs?: number;
  /** Pending syncs that trigger an fsync at once (default 256). */
  syncBatchSize?: number;
  /** Append buffer of the current file (default 1 MiB). */
  writeBufferSize?: number;
  /** Open read handles kept (default 32). */
  maxOpenFiles?: number;
  /** Segment files scanned at once on a non-clean start (default 2). */
  scanConcurrency?: number;
  /**
   * Messages whose ref counts a non-clean start keeps in memory while it scans
   * (about 60 bytes each; default 1,000,000); beyond, they go to the index.
   */
  recoveryRefsInMemory?: number;
  /** I/O chunk of compaction and scans (default 1 MiB). */
  ioChunkSize?: number;
}

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
  /** Bytes skipped by scans as damaged or torn. */
  skippedBytes: number;
  /** Files whose records the last open (non-clean) took from their hint instead of a scan, and files it scanned. */
  openHintedFiles: number;
  openScannedFiles: number;
  /** Hint files written since the open. */
  hintsWritten: number;
  /** Hint writes and deletions asked and not yet done. */
  hintSteps: number;
  writes: number;
  reads: number;
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

type Op =
  | { kind: 'write'; id: MsgId; key: string; body: Buffer }
  | { kind: 'remove'; ids: MsgId[] }
  | { kind: 'sync'; ids: MsgId[]; resolve: () => void; reject: (e: unknown) => void }
  | { kind: 'contains'; id: MsgId; resolve: (v: boolean) => void; reject: (e: unknown) => void }
  | { kind: 'gcDone'; src: FileSummary; dst: FileSummary; total: number }
  | { kind: 'gcFailed'; src: FileSummary; dst: FileSummary }
  | { kind: 'gcSkipped'; src: FileSummary; dst: FileSummary }
  | { kind: 'clientDelete'; ref: string }
  | { kind: 'barrier'; resolve: () => void; reject: (e: unknown) => void };

/** Operations put aside while the compaction holding their file runs. */
type Deferred = { kind: 'remove'; id: MsgId } | Extract<Op, { kind: 'contains' }>;

class Aborted extends Error {}

/** Queued contains answered together at most (see handleContainsBatch). */
const CONTAINS_BATCH = 1024;

function keyOf(id: MsgId): string {
  return id.toString('latin1');
}

function checkId(id: unknown): asserts id is Buffer {
  if (!Buffer.isBuffer(id) || id.length !== ID_SIZE) {
    throw new InvalidIdError(`message id must be a ${ID_SIZE}-byte Buffer, got ${Buffer.isBuffer(id) ? `${id.length} bytes` : typeof id}`);
  }
}

function checkIds(ids: unknown): asserts ids is Buffer[] {
  if (!Array.isArray(ids)) throw new InvalidArgumentError('ids must be an array of Buffers');
  for (const id of ids) checkId(id);
}

function posInt(v: number | undefined, name: string, def: number, min = 1): number {
  if (v === undefined) return def;
  if (!Number.isSafeInteger(v) || v < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

export class MessageStore {
  private readonly summaries = new Map<number, FileSummary>();
  private sumValid = 0;
  private sumFile = 0;
  private writer!: SegmentWriter;
  private readonly writeCache = new WriteCache();
  private readonly dedup = new DedupCache();
  private readonly handles: HandleCache;
  private readonly batcher: SyncBatcher;
  private readonly clientRefs: Set<string>;

  private readonly queue: Op[] = [];
  private queueHead = 0;
  private pumping = false;
  private idleWaiters: Array<() => void> = [];

  private gcActive: { src: number; dst: number } | undefined;
  private gcRun: Promise<void> | undefined;
  private gcIdleWaiters: Array<() => void> = [];
  private readonly noReaderWaiters = new Map<number, () => void>();
  private deferred: Deferred[] = [];
  /** Hint writes and deletions, one at a time in the order asked (hint-file.ts says why). */
  private hintChain: Promise<void> = Promise.resolve();
  /** Hint steps asked and not yet done. */
  private hintSteps = 0;
  private writeHints = true;
  /** Referenced ids the non-clean open found no record of, until takeUnfound(). */
  private unfoundAtOpen?: Set<string>;

  private closing = false;
  private closed = false;
  private crashed = false;
  private failure: unknown;

  private readonly counters = {
    compactions: 0,
    reclaimedBytes: 0,
    checksumFailures: 0,
    skippedBytes: 0,
    openHintedFiles: 0,
    openScannedFiles: 0,
    hintsWritten: 0,
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
    private readonly log: StoreLogger,
    private readonly opts: { syncIntervalMs: number; syncBatchSize: number; writeBufferSize: number; ioChunkSize: number },
    maxOpenFiles: number,
  ) {
    this.clientRefs = new Set(clientRefs);
    this.handles = new HandleCache(dir, maxOpenFiles);
    // A failed group commit fails the store: the writer's chain is failed for good, and no later fsync may confirm.
    this.batcher = new SyncBatcher(
      async () => {
        try {
          await this.writer.sync();
        } catch (e) {
          this.fail(e);
          throw e;
        }
      },
      opts.syncIntervalMs,
      opts.syncBatchSize,
    );
  }

  static async open(options: MessageStoreOptions): Promise<MessageStore> {
    if (!options || typeof options.dir !== 'string' || options.dir === '') throw new InvalidArgumentError('dir must be a non-empty string');
    const fileSizeLimit = posInt(options.fileSizeLimit, 'fileSizeLimit', DEFAULT_FILE_SIZE_LIMIT, 64);
    const tuning = {
      syncIntervalMs: posInt(options.syncIntervalMs, 'syncIntervalMs', 5, 0),
      syncBatchSize: posInt(options.syncBatchSize, 'syncBatchSize', 256),
      writeBufferSize: posInt(options.writeBufferSize, 'writeBufferSize', 1 << 20),
      ioChunkSize: posInt(options.ioChunkSize, 'ioChunkSize', 1 << 20, 4096),
    };
    const maxOpenFiles = posInt(options.maxOpenFiles, 'maxOpenFiles', 32);
    const scanConcurrency = posInt(options.scanConcurrency, 'scanConcurrency', 2);
    const recoveryRefsInMemory = posInt(options.recoveryRefsInMemory, 'recoveryRefsInMemory', 1_000_000);
    if (options.clientRefs !== undefined && (!Array.isArray(options.clientRefs) || !options.clientRefs.every((r) => typeof r === 'string'))) {
      throw new InvalidArgumentError('clientRefs must be undefined or an array of strings');
    }
    const factory = resolveIndex(options.index);
    const log: StoreLogger = options.log ?? (() => undefined);
    const dir = path.resolve(options.dir);
    const started = Date.now();

    let attemptClean: boolean;
    if (options.clientRefs === undefined) {
      await fsp.rm(dir, { recursive: true, force: true });
      await fsp.mkdir(dir, { recursive: true });
      attemptClean = false;
    } else {
      await fsp.mkdir(dir, { recursive: true });
      attemptClean = !(await recoverCrashedCompactions(dir, log));
    }
    // Always taken (read and deleted), so that state left by this run's predecessor is trusted at most once.
    const recoveredSummary = await recoverFileSummary(dir);
    const terms = await readRecoveryTerms(dir);

    let clean = false;
    if (attemptClean && options.clientRefs !== undefined) {
      const want = [...new Set(options.clientRefs)].sort();
      const had = terms ? [...new Set(terms.clientRefs)].sort() : undefined;
      if (!terms || !recoveredSummary) log('warn', 'no clean shutdown state found; rebuilding the index from the segment files');
      else if (terms.indexKind !== factory.kind) log('warn', `index changed (${terms.indexKind} -> ${factory.kind}); rebuilding`);
      else if (JSON.stringify(want) !== JSON.stringify(had)) log('warn', 'client refs differ from those recorded at the last clean shutdown; rebuilding');
      else if (!(await MessageStore.filesMatch(dir, recoveredSummary))) log('warn', 'segment files differ from the recorded file summary; rebuilding');
      else clean = true;
    }
    const { index, recovered } = await factory.open(path.join(dir, 'index'), clean);
    if (clean && !recovered) {
      log('warn', `the ${factory.kind} index could not be recovered; rebuilding`);
      clean = false;
    }
    if (!clean && recovered) await index.clear();

    let summaries: FileSummary[];
    let current: number;
    let currentSize: number;
    let scanFailures = 0;
    let skipped = 0;
    let hints: Array<{ file: number; data: Buffer }> = [];
    let hinted = 0;
    let scanned = 0;
    let unfound: Set<string> | undefined;
    if (clean) {
      summaries = recoveredSummary!;
      const last = summaries[summaries.length - 1];
      current = last.file;
      currentSize = last.fileSize;
    } else {
      let refs: CountedRefs = { inMemory: new Map(), spilled: false, deltas: 0 };
      if (options.clientRefs !== undefined && options.refDeltas) {
        refs = await countMsgRefs(index, options.refDeltas(), log, recoveryRefsInMemory);
        log('info', `recovery: ${refs.deltas} ref-count deltas read, ${refs.spilled ? index.size() : refs.inMemory.size} messages referenced`);
      }
      const r = await rebuildFromSegments(dir, index, refs, { log, concurrency: scanConcurrency });
      summaries = r.summaries;
      current = r.current;
      currentSize = r.currentSize;
      scanFailures = r.checksumFailures;
      skipped = r.skippedBytes;
      hints = r.hints;
      hinted = r.hintedFiles;
      scanned = r.summaries.length + r.deletedFiles - r.hintedFiles;
      if (options.refDeltas) unfound = r.unfound;
    }
    await removeOrphanHints(dir, summaries.map((s) => s.file));

    const store = new MessageStore(dir, fileSizeLimit, index, clean, clean ? options.clientRefs! : [], log, tuning, maxOpenFiles);
    store.counters.checksumFailures = scanFailures;
    store.counters.skippedBytes = skipped;
    store.counters.openHintedFiles = hinted;
    store.counters.openScannedFiles = scanned;
    store.unfoundAtOpen = unfound;
    for (const s of summaries) {
      store.summaries.set(s.file, s);
      store.sumValid += s.validTotalSize;
      store.sumFile += s.fileSize;
    }
    store.writer = await SegmentWriter.open(dir, current, currentSize, {
      bufferLimit: tuning.writeBufferSize,
      onError: (e) => store.fail(e),
    });
    await fsyncDir(dir);
    // Files without a hint get one in the background (those a rebuild just
    // scanned from that scan; after a clean start, from a scan of their own),
    // so that the next non-clean start reads the hints instead.
    if (options.writeHints !== false) {
      for (const h of hints) void store.hintStep(() => store.writeHintOf(h.file, h.data)).catch(() => undefined);
      if (clean) {
        const have = new Set(await listNumbered(dir, HINT_EXT));
        for (const s of summaries) if (s.file !== current && !have.has(s.file)) store.hintFromScan(s.file);
      }
    } else {
      store.writeHints = false;
    }
    log(
      'info',
      `opened ${clean ? 'clean' : 'after a non-clean shutdown'} in ${Date.now() - started} ms: ${summaries.length} files, ` +
        `${index.size()} messages, ${store.sumValid} valid of ${store.sumFile} bytes, index ${index.kind}`,
    );
    store.maybeCompact();
    return store;
  }

  /** The clean state is trusted only if the files on disk are exactly those summarised, with those sizes. */
  private static async filesMatch(dir: string, summaries: FileSummary[]): Promise<boolean> {
    if (summaries.length === 0) return false;
    const files = await listNumbered(dir, SEGMENT_EXT);
    if ((await listNumbered(dir, TMP_EXT)).length) return false;
    if (files.length !== summaries.length) return false;
    for (let i = 0; i < files.length; i++) {
      if (files[i] !== summaries[i].file) return false;
      const st = await fsp.stat(segmentPath(dir, files[i]));
      if (st.size !== summaries[i].fileSize) return false;
    }
    return true;
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
  syncMessages(ids: MsgId[]): Promise<void> {
    try {
      this.checkOpen();
      checkIds(ids);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.failure !== undefined) return Promise.reject(new StoreFailedError(this.failure));
    return new Promise<void>((resolve, reject) => this.post({ kind: 'sync', ids: ids.map((id) => Buffer.from(id)), resolve, reject }));
  }

  /** @internal Resolves once every operation posted before it has been applied. */
  barrier(): Promise<void> {
    return new Promise<void>((resolve, reject) => this.post({ kind: 'barrier', resolve, reject }));
  }

  /** @internal */
  deleteClient(ref: string): void {
    this.post({ kind: 'clientDelete', ref });
  }

  /** @internal */
  async readMessage(id: MsgId): Promise<Buffer | undefined> {
    this.checkOpen();
    checkId(id);
    this.counters.reads++;
    const key = keyOf(id);
    const shared = this.dedup.get(key);
    if (shared) return shared;
    const cached = this.writeCache.get(key);
    if (cached) return cached;
    let loc = await this.index.lookup(id);
    for (let attempt = 0; ; attempt++) {
      if (!loc) return undefined;
      if (attempt > 1000) throw new StoreError('READ_FAILED', `read of ${id.toString('hex')} kept racing with compactions`);
      const fs = this.summaries.get(loc.file);
      if (!fs || fs.locked) {
        if (this.gcActive) {
          await this.gcIdle();
          loc = await this.index.lookup(id);
          continue;
        }
        const again = await this.index.lookup(id);
        if (again && again.file !== loc.file) {
          loc = again;
          continue;
        }
        if (again) this.log('error', `index places ${id.toString('hex')} in file ${loc.file}, which does not exist`);
        return undefined;
      }
      // Once counted as a reader, no compaction can touch this file until we leave,
      // so a fresh lookup that still names it is exact.
      fs.readers++;
      try {
        const cur = await this.index.lookup(id);
        if (!cur) return undefined;
        if (cur.file !== loc.file) {
          loc = cur;
          continue;
        }
        let body = await this.readFromDisk(id, cur);
        if (body && cur.refCount > 1) body = this.dedup.share(key, body);
        return body;
      } finally {
        fs.readers--;
        if (fs.readers === 0 && fs.locked) this.noReaderWaiters.get(fs.file)?.();
      }
    }
  }

  private async readFromDisk(id: MsgId, loc: MsgLocation): Promise<Buffer | undefined> {
    const w = this.writer;
    if (loc.file === w.file && loc.offset + loc.totalSize > w.writtenOffset) await w.flush();
    const buf = Buffer.allocUnsafe(loc.totalSize);
    let got = 0;
    try {
      got = await this.handles.use(loc.file, async (fh) => {
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
      this.counters.checksumFailures++;
      this.log('error', `record of ${id.toString('hex')} at ${loc.file}${SEGMENT_EXT}:${loc.offset} is damaged (${r ? r.kind : 'short read'}); not returned`);
      return undefined;
    }
    return r.body;
  }

  // ---------------------------------------------------------------- mailbox

  private post(op: Op, front = false): void {
    if (front) {
      if (this.queueHead > 0) this.queue[--this.queueHead] = op;
      else this.queue.unshift(op);
    } else this.queue.push(op);
    if (!this.pumping) {
      this.pumping = true;
      void this.pump();
    }
  }

  private async pump(): Promise<void> {
    try {
      while (this.queueHead < this.queue.length && !this.crashed) {
        const op = this.shift();
        const batch = op.kind === 'contains' ? this.moreContains(op) : undefined;
        try {
          await (batch ? this.handleContainsBatch(batch) : this.handle(op));
        } catch (e) {
          if (e instanceof Aborted) break;
          for (const o of batch ?? [op]) if ('reject' in o) o.reject(e);
          this.fail(e);
        }
      }
    } finally {
      this.pumping = false;
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of ws) w();
    }
  }

  private shift(): Op {
    const op = this.queue[this.queueHead];
    this.queue[this.queueHead++] = undefined as unknown as Op;
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    return op;
  }

  /** `first` and the contains queued right behind it (a recovering queue asks for a segment's worth at once). */
  private moreContains(first: Extract<Op, { kind: 'contains' }>): Array<Extract<Op, { kind: 'contains' }>> {
    const batch = [first];
    while (batch.length < CONTAINS_BATCH && this.queueHead < this.queue.length) {
      const next = this.queue[this.queueHead];
      if (next.kind !== 'contains') break;
      batch.push(next);
      this.shift();
    }
    return batch;
  }

  private drain(): Promise<void> {
    if (!this.pumping && this.queueHead >= this.queue.length) return Promise.resolve();
    return new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private async handle(op: Op): Promise<void> {
    switch (op.kind) {
      case 'write':
        return this.handleWrite(op.id, op.key, op.body);
      case 'remove':
        for (const id of op.ids) await this.removeMessage(id);
        this.maybeCompact();
        return;
      case 'sync':
        return this.handleSync(op);
      case 'contains':
        return this.handleContains(op);
      case 'gcDone':
        return this.handleGcDone(op.src, op.dst, op.total);
      case 'gcFailed':
        return this.handleGcFailed(op.src, op.dst);
      case 'gcSkipped':
        return this.handleGcSkipped(op.src, op.dst);
      case 'clientDelete':
        this.clientRefs.delete(op.ref);
        return;
      case 'barrier':
        op.resolve();
        return;
    }
  }

  private async handleWrite(id: MsgId, key: string, body: Buffer): Promise<void> {
    this.writeCache.written(key);
    const loc = await this.index.lookup(id);
    if (loc) {
      // only the ref count: a concurrent compaction may be moving the record
      await this.index.updateFields(id, { refCount: loc.refCount + 1 });
      return;
    }
    if (this.failure !== undefined) return;
    const header = encodeHeader(id, body);
    const totalSize = header.length + body.length;
    const w = this.writer;
    const offset = w.append(header, body);
    this.index.insert(id, { refCount: 1, file: w.file, offset, totalSize });
    const fs = this.summaries.get(w.file)!;
    const top = fs.contiguousTop;
    fs.validTotalSize += totalSize;
    if (offset === top) fs.contiguousTop = fs.validTotalSize;
    fs.fileSize += totalSize;
    this.sumValid += totalSize;
    this.sumFile += totalSize;
    if (w.size >= this.fileSizeLimit) await this.roll();
  }

  private async roll(): Promise<void> {
    await this.batcher.syncNow();
    const old = this.writer;
    const next = old.file + 1;
    const w = await SegmentWriter.open(this.dir, next, 0, {
      bufferLimit: this.opts.writeBufferSize,
      onError: (e) => this.fail(e),
    });
    await fsyncDir(this.dir);
    this.summaries.set(next, newSummary(next, old.file));
    this.summaries.get(old.file)!.right = next;
    this.writer = w;
    await old.close();
    this.hintFromScan(old.file);
    this.writeCache.dropAllIdle();
    this.maybeCompact();
  }

  // ---------------------------------------------------------------- hints

  /** Runs `step` after every hint step asked before it; a failure fails the store (and rejects). */
  private hintStep(step: () => Promise<void>): Promise<void> {
    this.hintSteps++;
    const p = this.hintChain.then(step).finally(() => this.hintSteps--);
    this.hintChain = p.catch((e) => this.fail(e));
    return p;
  }

  /** Whether `file` may get a hint now. Not while closing: a clean stop does not wait for them (the next start scans what has none). */
  private hintWanted(file: number): boolean {
    return !this.crashed && !this.closing && this.failure === undefined && this.summaries.has(file);
  }

  /** Writes `file`'s hint unless the store crashed or failed, or the file is gone; its data is already fsynced. */
  private async writeHintOf(file: number, data: Buffer): Promise<void> {
    if (!this.hintWanted(file)) return;
    await writeHint(this.dir, data, file);
    this.counters.hintsWritten++;
  }

  /** Scans `file` (fsynced, no longer appended to) and writes its hint if the scan found it sound. */
  private hintFromScan(file: number): void {
    if (!this.writeHints) return;
    void this.hintStep(async () => {
      if (!this.hintWanted(file)) return;
      const scan = await scanSegment(segmentPath(this.dir, file), this.opts.ioChunkSize);
      if (scan.checksumFailures || scan.skippedBytes) {
        this.log('warn', `${file}${SEGMENT_EXT}: ${scan.checksumFailures} records fail their checksum, ${scan.skippedBytes} bytes are no intact record; no hint written`);
        return;
      }
      await this.writeHintOf(file, encodeHint(file, scan.fileSize, scan.records));
    }).catch(() => undefined);
  }

  private async removeMessage(id: MsgId): Promise<void> {
    // A failed store's counts may be wrong (a compaction that failed half-way
    // leaves index entries pointing at copies that are not all there): no file
    // is deleted on their word. The next open rebuilds them from the queues.
    if (this.failure !== undefined) return;
    const loc = await this.index.lookup(id);
    if (!loc) {
      this.log('warn', `remove of unknown message ${id.toString('hex')} ignored`);
      return;
    }
    if (loc.refCount > 1) {
      await this.index.updateFields(id, { refCount: loc.refCount - 1 });
      return;
    }
    const key = keyOf(id);
    const fs = this.summaries.get(loc.file);
    if (fs?.locked) {
      this.deferred.push({ kind: 'remove', id });
      return;
    }
    this.dedup.delete(key);
    this.index.delete(id);
    this.writeCache.dropIfIdle(key);
    if (!fs) return;
    fs.contiguousTop = Math.min(fs.contiguousTop, loc.offset);
    fs.validTotalSize -= loc.totalSize;
    this.sumValid -= loc.totalSize;
    await this.deleteFileIfEmpty(fs);
  }

  private async deleteFileIfEmpty(fs: FileSummary): Promise<void> {
    if (fs.file === this.writer.file || fs.validTotalSize > 0 || fs.locked) return;
    if (fs.right !== undefined) this.summaries.get(fs.right)!.left = fs.left;
    if (fs.left !== undefined) this.summaries.get(fs.left)!.right = fs.right;
    this.summaries.delete(fs.file);
    this.handles.invalidate(fs.file);
    this.sumFile -= fs.fileSize;
    await fsp.rm(segmentPath(this.dir, fs.file), { force: true });
    void this.hintStep(() => removeHint(this.dir, fs.file, false)).catch(() => undefined);
  }

  private async handleSync(op: Extract<Op, { kind: 'sync' }>): Promise<void> {
    if (this.failure !== undefined) {
      op.reject(new StoreFailedError(this.failure));
      return;
    }
    const w = this.writer;
    let needed = false;
    for (const id of op.ids) {
      const loc = await this.index.lookup(id);
      // anything outside the current file was fsynced when its file rolled or was compacted
      if (loc && loc.file === w.file && loc.offset + loc.totalSize > w.syncedOffset) {
        needed = true;
        break;
      }
    }
    if (!needed) op.resolve();
    else this.batcher.wait().then(op.resolve, (e) => op.reject(e instanceof StoreError ? e : new StoreFailedError(e)));
  }

  private async handleContains(op: Extract<Op, { kind: 'contains' }>): Promise<void> {
    this.answerContains(op, await this.index.lookup(op.id));
  }

  /**
   * Lookups only, with no write queued between them, so they may run at once:
   * an index that goes to disk reads them in one trip instead of one each.
   */
  private async handleContainsBatch(ops: Array<Extract<Op, { kind: 'contains' }>>): Promise<void> {
    if (ops.length === 1) return this.handleContains(ops[0]);
    const locs = await Promise.all(ops.map((op) => this.index.lookup(op.id)));
    for (let i = 0; i < ops.length; i++) this.answerContains(ops[i], locs[i]);
  }

  private answerContains(op: Extract<Op, { kind: 'contains' }>, loc: MsgLocation | undefined): void {
    if (!loc) return op.resolve(false);
    const gc = this.gcActive;
    if (gc && (loc.file === gc.src || loc.file === gc.dst)) {
      this.deferred.push(op);
      return;
    }
    op.resolve(true);
  }

  // ---------------------------------------------------------------- compaction

  private maybeCompact(): void {
    if (this.gcActive || this.closing || this.crashed || this.failure !== undefined) return;
    const limit = this.fileSizeLimit;
    if (!(this.sumFile > 2 * limit && (this.sumFile - this.sumValid) / this.sumFile > GARBAGE_FRACTION)) return;
    let dst = this.eldest();
    while (dst && dst.right !== undefined) {
      const src = this.summaries.get(dst.right)!;
      if (src.right === undefined) return; // never the current file
      if (!dst.damaged && !src.damaged && dst.validTotalSize + src.validTotalSize <= limit) {
        this.startCompaction(src, dst);
        return;
      }
      dst = src;
    }
  }

  private eldest(): FileSummary | undefined {
    let min: FileSummary | undefined;
    for (const s of this.summaries.values()) if (!min || s.file < min.file) min = s;
    return min;
  }

  private startCompaction(src: FileSummary, dst: FileSummary): void {
    src.locked = true;
    dst.locked = true;
    this.gcActive = { src: src.file, dst: dst.file };
    const run = (async () => {
      try {
        await this.waitNoReaders(src);
        await this.waitNoReaders(dst);
        // The destination changes: its hint goes first, for good, before any byte of it is written.
        await this.hintStep(() => removeHint(this.dir, dst.file, true));
        const total = await combineFiles(
          {
            dir: this.dir,
            index: this.index,
            chunkSize: this.opts.ioChunkSize,
            checkAbort: () => {
              if (this.crashed) throw new Aborted();
            },
            onChecksumFailures: (n) => {
              this.counters.checksumFailures += n;
            },
          },
          src,
          dst,
        );
        void this.hintStep(() => removeHint(this.dir, src.file, false)).catch(() => undefined);
        this.hintFromScan(dst.file);
        this.post({ kind: 'gcDone', src, dst, total }, true);
      } catch (e) {
        if (e instanceof Aborted || this.crashed) return;
        if (e instanceof DamagedSegmentError) {
          this.log('error', `compaction of ${src.file}${SEGMENT_EXT} into ${dst.file}${SEGMENT_EXT} not done: ${e.message}; the file is kept as it is and never compacted in this run, its intact records stay readable`);
          this.summaries.get(e.file)!.damaged = true;
          this.post({ kind: 'gcSkipped', src, dst }, true);
          return;
        }
        this.fail(e);
        this.post({ kind: 'gcFailed', src, dst }, true);
      }
    })();
    this.gcRun = run;
  }

  /**
   * A compaction that failed (the store has failed with it): nothing moved,
   * both files stay as they were and are unlocked; waiters are released.
   * Removes deferred behind it are dropped (the store takes no writes now; the
   * next open rebuilds the reference counts); lookups deferred are answered.
   */
  private async handleGcFailed(src: FileSummary, dst: FileSummary): Promise<void> {
    src.locked = false;
    dst.locked = false;
    for (const d of this.endCompaction()) if (d.kind === 'contains') await this.handleContains(d);
  }

  /** A compaction that found damage before it wrote anything: both files as they were, the deferred operations done now. */
  private async handleGcSkipped(src: FileSummary, dst: FileSummary): Promise<void> {
    src.locked = false;
    dst.locked = false;
    for (const d of this.endCompaction()) {
      if (d.kind === 'remove') await this.removeMessage(d.id);
      else await this.handleContains(d);
    }
  }

  /** The running compaction is over: waiters released; returns what was deferred behind it. */
  private endCompaction(): Deferred[] {
    this.gcActive = undefined;
    this.gcRun = undefined;
    const ws = this.gcIdleWaiters;
    this.gcIdleWaiters = [];
    for (const w of ws) w();
    const pending = this.deferred;
    this.deferred = [];
    return pending;
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

  private gcIdle(): Promise<void> {
    if (!this.gcActive) return Promise.resolve();
    return new Promise<void>((r) => this.gcIdleWaiters.push(r));
  }

  private async handleGcDone(src: FileSummary, dst: FileSummary, total: number): Promise<void> {
    this.handles.invalidate(src.file);
    this.handles.invalidate(dst.file);
    // the source's right may have changed meanwhile (a file deleted), never the destination's
    const srcRight = src.right;
    if (srcRight !== undefined) this.summaries.get(srcRight)!.left = dst.file;
    const reclaimed = src.fileSize + dst.fileSize - total;
    this.sumValid += total - (src.validTotalSize + dst.validTotalSize);
    this.sumFile -= reclaimed;
    dst.right = srcRight;
    dst.validTotalSize = total;
    dst.contiguousTop = total;
    dst.fileSize = total;
    dst.locked = false;
    this.summaries.delete(src.file);
    this.counters.compactions++;
    this.counters.reclaimedBytes += reclaimed;
    for (const d of this.endCompaction()) {
      if (d.kind === 'remove') await this.removeMessage(d.id);
      else await this.handleContains(d);
    }
    this.maybeCompact();
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

  /** The error that failed the store (a write or fsync), if one did: it accepts no writes after it. */
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

  get failed(): Error | undefined {
    if (this.failure === undefined) return undefined;
    return this.failure instanceof Error ? this.failure : new Error(String(this.failure));
  }

  /**
   * Clean shutdown: applies pending operations, lets a running compaction
   * finish, fsyncs, and writes the file summary, the index and the recovery
   * terms (the refs of every client registered and not deleted).
   */
  async close(): Promise<void> {
    if (this.closing || this.closed || this.crashed) return;
    this.closing = true;
    for (;;) {
      await this.drain();
      if (this.gcRun) {
        await this.gcRun;
        continue;
      }
      if (this.queueHead < this.queue.length) continue;
      break;
    }
    await this.hintChain;
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
        await storeFileSummary(this.dir, [...this.summaries.values()].sort((a, b) => a.file - b.file));
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
      this.log('info', `closed cleanly: ${this.summaries.size} files, ${this.index.size()} messages`);
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
    this.batcher.failAll(new StoreClosedError());
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const op = this.queue[i];
      if ('reject' in op) op.reject(new StoreClosedError());
    }
    for (const d of this.deferred) if (d.kind === 'contains') d.reject(new StoreClosedError());
    this.deferred = [];
    await this.gcRun?.catch(() => undefined);
    await this.hintChain;
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
      files: this.summaries.size,
      currentFile: this.writer.file,
      messages: this.index.size(),
      validBytes: this.sumValid,
      fileBytes: this.sumFile,
      garbageRatio: this.sumFile > 0 ? (this.sumFile - this.sumValid) / this.sumFile : 0,
      compactions: this.counters.compactions,
      compactionActive: this.gcActive !== undefined,
      reclaimedBytes: this.counters.reclaimedBytes,
      syncs: this.batcher.syncs,
      checksumFailures: this.counters.checksumFailures,
      skippedBytes: this.counters.skippedBytes,
      openHintedFiles: this.counters.openHintedFiles,
      openScannedFiles: this.counters.openScannedFiles,
      hintsWritten: this.counters.hintsWritten,
      hintSteps: this.hintSteps,
      writes: this.counters.writes,
      reads: this.counters.reads,
      removes: this.counters.removes,
      pendingOps: this.queue.length - this.queueHead,
      deferredOps: this.deferred.length,
      pendingSyncs: this.batcher.pending,
      writeCacheEntries: this.writeCache.size,
      writeCacheBytes: this.writeCache.bytes,
      dedupEntries: this.dedup.size,
      openHandles: this.handles.openCount,
    };
  }

  /** The file summary, ascending (for tests and `warren inspect`). */
  fileSummaries(): FileSummary[] {
    return [...this.summaries.values()].sort((a, b) => a.file - b.file).map((s) => ({ ...s }));
  }

  /** Every index entry (for tests and verification). */
  indexEntries(): AsyncIterable<[MsgId, MsgLocation]> {
    return this.index.entries();
  }

  /** Resolves once every operation posted so far has been applied and no compaction runs. */
  async quiesce(): Promise<void> {
    for (;;) {
      // Wait for the pump to go idle (a barrier would keep it busy forever).
      await this.drain();
      if (this.gcRun) {
        await this.gcRun;
        continue;
      }
      if (this.queueHead < this.queue.length || this.pumping) continue;
      const hints = this.hintChain;
      await hints;
      if (hints !== this.hintChain) continue;
      return;
    }
  }
}

/** A client of the store (a queue), identified by its ref. */
export class StoreClient {
  private terminated = false;

  /** @internal */
  constructor(
    private readonly store: MessageStore,
    readonly ref: string,
  ) {}

  /** Stores a message (or adds a reference to it if the id is already stored). Never blocks. */
  write(id: MsgId, body: Buffer): void {
    this.check();
    this.store.writeMessage(id, body);
  }

  /** The body, or undefined if the store does not hold the message. Treat the Buffer as read-only. */
  read(id: MsgId): Promise<Buffer | undefined> {
    this.check();
    return this.store.readMessage(id);
  }

  /** Drops one reference to each message; at zero the record becomes garbage. */
  remove(ids: MsgId[]): void {
    this.check();
    this.store.removeMessages(ids);
  }

  /** Resolves once every listed message is durable on disk (ids no longer stored resolve too). */
  sync(ids: MsgId[]): Promise<void> {
    this.check();
    return this.store.syncMessages(ids);
  }

  /** Ends this client; its ref stays recorded for the next clean start. */
  async terminate(): Promise<void> {
    if (this.terminated) return;
    this.store.assertOpen();
    this.terminated = true;
    await this.store.barrier();
  }

  /** Ends this client and forgets its ref (its queue is gone). */
  async deleteAndTerminate(): Promise<void> {
    if (this.terminated) return;
    this.store.assertOpen();
    this.terminated = true;
    this.store.deleteClient(this.ref);
    await this.store.barrier();
  }

  private check(): void {
    if (this.terminated) throw new ClientTerminatedError(this.ref);
  }
}
