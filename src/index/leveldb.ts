/**
 * Message-location index on LevelDB (`level`), so that memory does not grow
 * with the number of stored messages.
 *
 * One key per message: 'm' + id (17 bytes) -> location (18 bytes: refCount
 * u32, file u32, offset u48, totalSize u32). Writes land in a pending map
 * (read-your-writes at once) and go to LevelDB, unsynced, in batches of 1,024
 * writes when the map holds `maxPendingWrites` entries, or after `idleFlushMs`: the index is a
 * cache of the segment files, rebuilt from them after a crash. A message
 * inserted and deleted before its batch goes out never reaches LevelDB (most
 * messages of a queue with fast consumers), and a Bloom filter of the ids in
 * LevelDB answers "absent" for a new message's id without a disk read. Hot
 * lookups are served from a bounded cache of recently used entries.
 *
 * deleteByFile scans the primary keys: the store calls it once per non-clean
 * recovery, so a per-file secondary key (two more batch operations a message)
 * would not pay for itself.
 *
 * Clean terminate writes the Bloom filter and a marker with the entry count;
 * open(dir, clean=true) trusts the directory only if that marker is there, and
 * consumes both, so a crash afterwards is never mistaken for a clean state.
 */
import * as crypto from 'crypto';
import * as path from 'path';
import { Level } from 'level';
import { writeFileAtomic } from '../util/durable-file';
import { GrowingBloomFilter } from './bloom-filter';
import { KEY_END, KEY_FIRST, BLOOM, MARKER, META_CLEAN, CleanMeta, decode, encode, primaryKey } from './leveldb-format';
import { RecentCache } from './recent-cache';
import { Index, keyOf, MsgId, MsgLocation, MsgLocationFields, NOT_IN_MEMORY } from './types';

/** A failed batch is retried this many times, 50 ms apart and doubling, before the index fails for good. */
const BATCH_ATTEMPTS = 5;
/** Writes per LevelDB batch of a flush (see flush). */
const OPS_PER_WRITE = 1024;
/** Keys read at a time while rebuilding the Bloom filter. */
const REBUILD_STEP = 10_000;
/** Layers of a growing Bloom filter before a fresh one is built (each full one adds ~0.07% false positives). */
const MAX_BLOOM_LAYERS = 4;

export class LevelDbIndexError extends Error {
  readonly code = 'ELEVELDB';
}

export type Db = Level<Buffer, Buffer>;
type ChainedBatch = ReturnType<Db['batch']>;

export interface Tuning {
  cacheEntries: number;
  maxPendingWrites: number;
  idleFlushMs: number;
  bloomMinCapacity: number;
  warn: (msg: string) => void;
}

export class LevelDbIndex implements Index {
  readonly kind = 'leveldb';
  /** Writes not yet in LevelDB: a location, or null for a delete. */
  private pending = new Map<string, MsgLocation | null>();
  /** Pending ids that LevelDB does not hold (inserted since the last batch): deleting one just forgets it. */
  private fresh = new Set<string>();
  /** The batch being written. */
  private inflight = new Map<string, MsgLocation | null>();
  /** Bumped by every write, so a lookup can tell a racing write happened. */
  private writes = 0;
  private readonly cache: RecentCache<MsgLocation>;
  private flushing: Promise<void> | null = null;
  private flushSoon = false;
  private idleTimer: NodeJS.Timeout | null = null;
  private count: number;
  /** Every id in LevelDB is in it; undefined while the first one is being built. */
  private bloom: GrowingBloomFilter | undefined;
  /** A fresh filter being built from LevelDB's keys, fed every new id meanwhile. */
  private nextBloom: GrowingBloomFilter | undefined;
  private rebuild: Promise<void> | null = null;
  private stopRebuild = false;
  private readonly counters = { batches: 0, batchOps: 0, diskReads: 0, readBatches: 0, bloomRebuilds: 0, batchFailures: 0 };
  /** Consecutive failed batches; at BATCH_ATTEMPTS the index fails. */
  private attempts = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Set when LevelDB kept refusing batches: sticky, every later write throws it. */
  private failure: LevelDbIndexError | undefined;
  /** Disk reads asked for in this turn of the event loop, sent as one getMany. */
  private reads: Array<{ key: Buffer; resolve: (v: Buffer | undefined) => void; reject: (e: unknown) => void }> = [];

  constructor(
    private readonly db: Db,
    private readonly dir: string,
    count: number,
    bloom: GrowingBloomFilter | undefined,
    private readonly t: Tuning,
  ) {
    this.count = count;
    this.bloom = bloom;
    this.cache = new RecentCache(t.cacheEntries);
    if (!bloom) this.startBloomRebuild();
  }

  lookupNow(id: MsgId): MsgLocation | undefined | typeof NOT_IN_MEMORY {
    const k = keyOf(id);
    // pending and in-flight values are a location or null (deleted); undefined means not there
    let p = this.pending.get(k);
    if (p === undefined) p = this.inflight.get(k);
    if (p !== undefined) return p ? { ...p } : undefined;
    const c = this.cache.get(k);
    if (c) return { ...c };
    if (this.bloom && !this.bloom.mayContain(id)) return undefined;
    return NOT_IN_MEMORY;
  }

  async lookup(id: MsgId): Promise<MsgLocation | undefined> {
    const now = this.lookupNow(id);
    if (now !== NOT_IN_MEMORY) return now;
    const k = keyOf(id);
    const before = this.writes;
    const v = await this.read(primaryKey(k));
    // A write may have landed (or even been flushed) while we waited: it wins,
    // and the value read must not be cached.
    if (this.writes !== before) return this.lookup(id);
    if (v === undefined) return undefined;
    const l = decode(v);
    this.cache.set(k, l);
    return { ...l };
  }

  /**
   * One LevelDB read; those asked for in the same synchronous run (a queue
   * fetching a batch, a recovery scan) go out as one getMany, so a thousand
   * reads cost one trip to LevelDB's thread instead of a thousand.
   */
  private read(key: Buffer): Promise<Buffer | undefined> {
    this.counters.diskReads++;
    return new Promise((resolve, reject) => {
      if (this.reads.push({ key, resolve, reject }) > 1) return;
      queueMicrotask(() => {
        const batch = this.reads;
        this.reads = [];
        this.counters.readBatches++;
        this.db.getMany(batch.map((r) => r.key)).then(
          (vs) => batch.forEach((r, i) => r.resolve(vs[i])),
          (e: unknown) => batch.forEach((r) => r.reject(e)),
        );
      });
    });
  }

  private put(k: string, l: MsgLocation | null): void {
    this.writes++;
    if (l === null && this.fresh.delete(k)) {
      // LevelDB never saw it: nothing to write
      this.pending.delete(k);
      this.cache.delete(k);
      return;
    }
    if (this.failure) throw this.failure;
    this.pending.set(k, l);
    if (l) this.cache.set(k, l);
    else this.cache.delete(k);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.failure || this.retryTimer) return;
    if (this.pending.size >= this.t.maxPendingWrites) {
      if (this.flushSoon) return;
      this.flushSoon = true;
      setImmediate(() => {
        this.flushSoon = false;
        void this.flush().catch(() => undefined);
      });
    } else if (!this.idleTimer) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = null;
        void this.flush().catch(() => undefined);
      }, this.t.idleFlushMs);
      this.idleTimer.unref();
    }
  }

  insert(id: MsgId, loc: MsgLocation): void {
    const k = keyOf(id);
    // absent from the index, so LevelDB will not hold it once earlier batches are written
    if (!this.pending.has(k)) this.fresh.add(k);
    this.put(k, { ...loc });
    this.count++;
  }

  update(id: MsgId, loc: MsgLocation): void {
    this.put(keyOf(id), { ...loc });
  }

  async updateFields(id: MsgId, fields: MsgLocationFields): Promise<void> {
    const cur = await this.lookup(id);
    if (!cur) return;
    // Another update (compaction moving the record, or a ref-count change) may
    // have landed during the await: merge into the latest value, never over it.
    const k = keyOf(id);
    const latest = this.pending.has(k) ? this.pending.get(k) : this.inflight.has(k) ? this.inflight.get(k) : (this.cache.get(k) ?? cur);
    if (!latest) return;
    this.put(k, { ...latest, ...definedFields(fields) });
  }

  delete(id: MsgId): void {
    this.put(keyOf(id), null);
    this.count--;
  }

  async deleteByFile(files: readonly number[]): Promise<void> {
    await this.flush();
    const set = new Set(files);
    const victims: Buffer[] = [];
    for await (const [k, v] of this.db.iterator({ gte: KEY_FIRST, lt: KEY_END })) {
      if (set.has(v.readUInt32BE(4))) victims.push(Buffer.from(k.subarray(1)));
    }
    for (const id of victims) {
      // re-checked: the entry may have changed since the scan read it
      const l = await this.lookup(id);
      if (l && set.has(l.file)) this.delete(id);
    }
    await this.flush();
  }

  async *entries(): AsyncIterable<[MsgId, MsgLocation]> {
    await this.flush();
    for await (const [k, v] of this.db.iterator({ gte: KEY_FIRST, lt: KEY_END })) {
      yield [Buffer.from(k.subarray(1)), decode(v)];
    }
  }

  size(): number {
    return this.count;
  }

  /** Writes pending changes to LevelDB in one batch (no sync). */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    while (this.flushing) await this.flushing;
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    if (this.pending.size === 0) return;
    const batch = this.pending;
    const fresh = this.fresh;
    this.pending = new Map();
    this.fresh = new Set();
    this.inflight = batch;
    // In LevelDB batches of OPS_PER_WRITE: encoding a batch and handing it to
    // LevelDB is synchronous, and 16,384 entries at once held the event loop
    // for 70-130 ms. The flush needs no atomicity: the index is rebuilt after
    // any crash, and lookups see `inflight` until every part is written.
    // Each part is a chained batch (a put or del goes to LevelDB's batch as it
    // is made): half the synchronous cost of an array batch, which
    // abstract-level copies and re-encodes operation by operation first
    // (409,600 puts in parts of 1,024: 345 vs 560-590 ms of main thread).
    const writeAll = async (): Promise<void> => {
      let part: ChainedBatch | undefined;
      for (const [k, nu] of batch) {
        const key = primaryKey(k);
        if (nu) {
          (part ??= this.db.batch()).put(key, encode(nu));
          const id = key.subarray(1);
          this.bloom?.add(id);
          this.nextBloom?.add(id);
        } else if (!fresh.has(k)) {
          (part ??= this.db.batch()).del(key);
        }
        if (part && part.length >= OPS_PER_WRITE) {
          await this.writePart(part);
          part = undefined;
        }
      }
      if (part) await this.writePart(part);
    };
    this.flushing = writeAll().then(
      () => {
        this.attempts = 0;
      },
      (e: unknown) => {
        // Not written: put it back under any newer writes, and try again later, a bounded number of times.
        for (const [k, v] of batch) {
          if (this.pending.has(k)) continue;
          this.pending.set(k, v);
          if (fresh.has(k)) this.fresh.add(k);
        }
        this.counters.batchFailures++;
        const msg = (e as Error).message;
        if (++this.attempts >= BATCH_ATTEMPTS) {
          this.failure = new LevelDbIndexError(`LevelDB index at ${this.dir} failed: ${this.attempts} batches in a row were refused, the last with: ${msg}`);
          this.t.warn(this.failure.message);
          throw this.failure;
        }
        const delay = 50 * 2 ** (this.attempts - 1);
        this.t.warn(`LevelDB index batch of ${batch.size} writes failed (${msg}); retry ${this.attempts} of ${BATCH_ATTEMPTS - 1} in ${delay} ms`);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          void this.flush().catch(() => undefined);
        }, delay);
        this.retryTimer.unref();
        throw e;
      },
    );
    try {
      await this.flushing;
    } finally {
      this.inflight = new Map();
      this.flushing = null;
    }
    if (this.bloom && !this.nextBloom && this.bloomWorn(this.bloom)) this.startBloomRebuild();
  }

  private writePart(part: ChainedBatch): Promise<void> {
    this.counters.batches++;
    this.counters.batchOps += part.length;
    return part.write();
  }

  /** Mostly ids of deleted entries, or so many layers that false positives add up. */
  private bloomWorn(b: GrowingBloomFilter): boolean {
    return b.added > 2 * Math.max(this.count, this.t.bloomMinCapacity) || b.layerCount > MAX_BLOOM_LAYERS;
  }

  /**
   * Builds a fresh filter, sized for twice the current entries, from
   * LevelDB's keys, in the background (the current one stays correct, only
   * less selective). Ids written meanwhile are added by flush; those of the
   * batch in flight here, so the new filter misses no id LevelDB may hold.
   */
  private startBloomRebuild(): void {
    const next = GrowingBloomFilter.forCapacity(Math.max(this.t.bloomMinCapacity, 2 * this.count));
    this.counters.bloomRebuilds++;
    this.nextBloom = next;
    for (const [k, v] of this.inflight) if (v) next.add(Buffer.from(k, 'latin1'));
    this.stopRebuild = false;
    this.rebuild = (async () => {
      const it = this.db.keys({ gte: KEY_FIRST, lt: KEY_END });
      try {
        // large steps: each is a trip to LevelDB's thread, queued behind the write batches
        for (let ks = await it.nextv(REBUILD_STEP); ks.length > 0 && !this.stopRebuild; ks = await it.nextv(REBUILD_STEP)) {
          for (const k of ks) next.add(k.subarray(1));
        }
        if (this.nextBloom === next && !this.stopRebuild) this.bloom = next;
      } catch (e) {
        if (!this.stopRebuild) {
          const now = this.bloom ? 'the current one stays in use' : 'lookups go to LevelDB';
          this.t.warn(`LevelDB index: building a fresh Bloom filter failed (${(e as Error).message}); ${now}`);
        }
      } finally {
        await it.close().catch(() => undefined);
        if (this.nextBloom === next) this.nextBloom = undefined;
        this.rebuild = null;
      }
    })();
  }

  private async endRebuild(): Promise<void> {
    this.stopRebuild = true;
    await this.rebuild;
    this.nextBloom = undefined;
  }

  /**
   * Clean stop: the last batch, then the clean meta key written with sync
   * (which makes LevelDB fsync its log, and so every batch before it), then
   * the marker file with the same generation, fsynced. The store writes its
   * own clean state only after this resolves.
   */
  async terminate(): Promise<void> {
    await this.endRebuild();
    await this.flush();
    const meta: CleanMeta = { count: this.count, generation: crypto.randomBytes(16).toString('hex') };
    const json = Buffer.from(JSON.stringify(meta));
    await this.db.put(META_CLEAN, json, { sync: true });
    await this.db.close();
    // an unfinished first build leaves no filter: the next open builds it
    if (this.bloom) await writeFileAtomic(path.join(this.dir, BLOOM), this.bloom.serialize());
    await writeFileAtomic(path.join(this.dir, MARKER), json);
  }

  async abandon(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.pending = new Map();
    this.fresh = new Set();
    await this.endRebuild();
    while (this.flushing) await this.flushing.catch(() => undefined);
    await this.db.close();
  }

  async clear(): Promise<void> {
    await this.endRebuild();
    await this.flush();
    await this.db.clear();
    this.cache.clear();
    this.count = 0;
    this.bloom = GrowingBloomFilter.forCapacity(this.t.bloomMinCapacity);
  }

  /** What the index did so far and what it holds in memory (for stats, tests and benchmarks). */
  stats(): LevelDbIndexStats {
    return {
      ...this.counters,
      pendingWrites: this.pending.size,
      cacheEntries: this.cache.size,
      bloomBytes: this.bloom?.byteLength ?? 0,
      bloomIds: this.bloom?.added ?? 0,
      bloomLayers: this.bloom?.layerCount ?? 0,
      bloomReady: this.bloom !== undefined && this.rebuild === null,
    };
  }
}

export interface LevelDbIndexStats extends Record<string, number | boolean> {
  /** Batches written to LevelDB, and the puts and deletes in them. */
  batches: number;
  batchOps: number;
  /** Lookups that went to LevelDB (not answered by the pending writes, the cache or the Bloom filter), in how many getMany calls. */
  diskReads: number;
  readBatches: number;
  bloomRebuilds: number;
  pendingWrites: number;
  cacheEntries: number;
  bloomBytes: number;
  bloomIds: number;
  bloomLayers: number;
  /** False while the filter is being (re)built. */
  bloomReady: boolean;
}

function definedFields(f: MsgLocationFields): MsgLocationFields {
  const out: MsgLocationFields = {};
  if (f.refCount !== undefined) out.refCount = f.refCount;
  if (f.file !== undefined) out.file = f.file;
  if (f.offset !== undefined) out.offset = f.offset;
  if (f.totalSize !== undefined) out.totalSize = f.totalSize;
  return out;
}


