/**
 * Message-location index on LevelDB (`level`), so that memory does not grow
 * with the number of stored messages.
 *
 * Keys: 'm' + id (17 bytes) -> location (18 bytes: refCount u32, file u32,
 * offset u48, totalSize u32), and 'f' + file + id -> '' so that deleteByFile
 * is a range scan. Writes land in a pending map (read-your-writes at once) and
 * go to LevelDB in one batch per event-loop turn, without sync: the index is
 * a cache of the segment files, rebuilt from them after a crash. Hot lookups
 * are served from a bounded LRU cache.
 *
 * Clean terminate writes a marker with the entry count; open(dir, clean=true)
 * trusts the directory only if that marker is there, and consumes it, so a
 * crash afterwards is never mistaken for a clean state.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { Level } from 'level';
import { Index, IndexFactory, MsgId, MsgLocation, MsgLocationFields } from './types';

const DB_DIR = 'leveldb';
const MARKER = 'leveldb-clean.json';
const VALUE_BYTES = 18;
const EMPTY = Buffer.alloc(0);

function primaryKey(id: MsgId): Buffer {
  const k = Buffer.allocUnsafe(17);
  k[0] = 0x6d; // 'm'
  id.copy(k, 1, 0, 16);
  return k;
}

function fileKey(file: number, id: MsgId): Buffer {
  const k = Buffer.allocUnsafe(21);
  k[0] = 0x66; // 'f'
  k.writeUInt32BE(file, 1);
  id.copy(k, 5, 0, 16);
  return k;
}

function filePrefix(file: number): Buffer {
  const k = Buffer.allocUnsafe(5);
  k[0] = 0x66;
  k.writeUInt32BE(file, 1);
  return k;
}

/** Just past every key of a file's range ('f' + file + any 16-byte id). */
function fileRangeEnd(file: number): Buffer {
  return Buffer.concat([filePrefix(file), Buffer.alloc(17, 0xff)]);
}

function encode(l: MsgLocation): Buffer {
  const v = Buffer.allocUnsafe(VALUE_BYTES);
  v.writeUInt32BE(l.refCount, 0);
  v.writeUInt32BE(l.file, 4);
  v.writeUIntBE(l.offset, 8, 6);
  v.writeUInt32BE(l.totalSize, 14);
  return v;
}

function decode(v: Buffer): MsgLocation {
  return { refCount: v.readUInt32BE(0), file: v.readUInt32BE(4), offset: v.readUIntBE(8, 6), totalSize: v.readUInt32BE(14) };
}

const hex = (id: MsgId) => id.toString('latin1');

export class LevelDbIndexError extends Error {
  readonly code = 'ELEVELDB';
}

export interface LevelDbIndexOptions {
  /** Locations kept in the LRU cache (default 100,000). */
  cacheEntries?: number;
  /** Told when a directory cannot be used and is rebuilt. */
  warn?: (msg: string) => void;
}

type Db = Level<Buffer, Buffer>;
type BatchOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

export class LevelDbIndex implements Index {
  readonly kind = 'leveldb';
  /** Writes not yet in LevelDB: a location, or null for a delete. */
  private pending = new Map<string, MsgLocation | null>();
  /** The batch being written. */
  private inflight = new Map<string, MsgLocation | null>();
  /**
   * For pending ids whose state in LevelDB is known (from the cache or the
   * batch in flight): that location, or null if absent. Lets flush() keep the
   * per-file keys right without reading the old value back. An id not known
   * here may leave a stale per-file key behind, which deleteByFile tolerates
   * (it checks the primary key) and clears with the file's range.
   */
  private pendingOld = new Map<string, MsgLocation | null>();
  /** Bumped by every write, so a lookup can tell a racing write happened. */
  private writes = 0;
  private readonly cache = new Map<string, MsgLocation>();
  private flushing: Promise<void> | null = null;
  private scheduled = false;
  private count: number;

  constructor(
    private readonly db: Db,
    private readonly dir: string,
    count: number,
    private readonly cacheEntries: number,
  ) {
    this.count = count;
  }

  private remember(k: string, l: MsgLocation): void {
    this.cache.delete(k);
    this.cache.set(k, l);
    if (this.cache.size > this.cacheEntries) this.cache.delete(this.cache.keys().next().value as string);
  }

  async lookup(id: MsgId): Promise<MsgLocation | undefined> {
    const k = hex(id);
    for (const m of [this.pending, this.inflight]) {
      if (m.has(k)) {
        const l = m.get(k);
        return l ? { ...l } : undefined;
      }
    }
    const c = this.cache.get(k);
    if (c) {
      this.remember(k, c);
      return { ...c };
    }
    const before = this.writes;
    const v = await this.db.get(primaryKey(id));
    // A write may have landed (or even been flushed) while we waited: it wins,
    // and the value read must not be cached.
    if (this.writes !== before) return this.lookup(id);
    if (v === undefined) return undefined;
    const l = decode(v);
    this.remember(k, l);
    return { ...l };
  }

  private put(id: MsgId, l: MsgLocation | null): void {
    const k = hex(id);
    this.writes++;
    if (!this.pending.has(k)) {
      if (this.inflight.has(k)) this.pendingOld.set(k, this.inflight.get(k) ?? null);
      else {
        const c = this.cache.get(k);
        if (c) this.pendingOld.set(k, c);
      }
    }
    this.pending.set(k, l);
    if (l) this.remember(k, l);
    else this.cache.delete(k);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        void this.flush().catch(() => undefined);
      });
    }
  }

  insert(id: MsgId, loc: MsgLocation): void {
    this.put(id, { ...loc });
    this.count++;
  }

  update(id: MsgId, loc: MsgLocation): void {
    this.put(id, { ...loc });
  }

  async updateFields(id: MsgId, fields: MsgLocationFields): Promise<void> {
    const cur = await this.lookup(id);
    if (!cur) return;
    // Another update (compaction moving the record, or a ref-count change) may
    // have landed during the await: merge into the latest value, never over it.
    const k = hex(id);
    const latest = this.pending.has(k) ? this.pending.get(k) : this.inflight.has(k) ? this.inflight.get(k) : (this.cache.get(k) ?? cur);
    if (!latest) return;
    this.put(id, { ...latest, ...definedFields(fields) });
  }

  delete(id: MsgId): void {
    this.put(id, null);
    this.count--;
  }

  async deleteByFile(files: readonly number[]): Promise<void> {
    await this.flush();
    for (const file of files) {
      const prefix = filePrefix(file);
      const end = fileRangeEnd(file);
      const ids: Buffer[] = [];
      for await (const k of this.db.keys({ gte: prefix, lt: end })) ids.push(Buffer.from(k.subarray(5)));
      for (const id of ids) {
        // the secondary key may be stale (the record moved): check the primary
        const l = await this.lookup(id);
        if (l && l.file === file) this.delete(id);
      }
      await this.flush();
      await this.db.clear({ gte: prefix, lt: end });
    }
  }

  async *entries(): AsyncIterable<[MsgId, MsgLocation]> {
    await this.flush();
    for await (const [k, v] of this.db.iterator({ gte: Buffer.from([0x6d]), lt: Buffer.from([0x6e]) })) {
      yield [Buffer.from(k.subarray(1)), decode(v)];
    }
  }

  size(): number {
    return this.count;
  }

  /** Writes pending changes to LevelDB in one batch (no sync). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.pending.size === 0) return;
    this.inflight = this.pending;
    this.pending = new Map();
    const batch = this.inflight;
    const olds = this.pendingOld;
    this.pendingOld = new Map();
    this.flushing = (async () => {
      const ops: BatchOp[] = [];
      for (const [k, nu] of batch) {
        const id = Buffer.from(k, 'latin1');
        // undefined: not known (no read: see pendingOld); null: known absent
        const old = olds.get(k);
        if (old && (!nu || old.file !== nu.file)) ops.push({ type: 'del', key: fileKey(old.file, id) });
        if (nu) {
          ops.push({ type: 'put', key: primaryKey(id), value: encode(nu) });
          if (!old || old.file !== nu.file) ops.push({ type: 'put', key: fileKey(nu.file, id), value: EMPTY });
        } else if (old !== null) {
          ops.push({ type: 'del', key: primaryKey(id) });
        }
      }
      await this.db.batch(ops);
    })();
    try {
      await this.flushing;
    } finally {
      this.inflight = new Map();
      this.flushing = null;
    }
  }

  async terminate(): Promise<void> {
    await this.flush();
    await this.db.close();
    const file = path.join(this.dir, MARKER);
    await fsp.writeFile(`${file}.tmp`, JSON.stringify({ count: this.count }));
    await fsp.rename(`${file}.tmp`, file);
  }

  async abandon(): Promise<void> {
    this.pending = new Map();
    this.pendingOld = new Map();
    while (this.flushing) await this.flushing.catch(() => undefined);
    await this.db.close();
  }

  async clear(): Promise<void> {
    await this.flush();
    await this.db.clear();
    this.cache.clear();
    this.count = 0;
  }
}

function definedFields(f: MsgLocationFields): MsgLocationFields {
  const out: MsgLocationFields = {};
  if (f.refCount !== undefined) out.refCount = f.refCount;
  if (f.file !== undefined) out.file = f.file;
  if (f.offset !== undefined) out.offset = f.offset;
  if (f.totalSize !== undefined) out.totalSize = f.totalSize;
  return out;
}

async function openDb(dbDir: string): Promise<Db> {
  const db = new Level<Buffer, Buffer>(dbDir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  return db;
}

export function levelDbIndexFactory(opts: LevelDbIndexOptions = {}): IndexFactory {
  const warn = opts.warn ?? ((msg: string) => process.emitWarning(msg, 'WarrenLevelDbIndex'));
  return {
    kind: 'leveldb',
    async open(dir: string, clean: boolean): Promise<{ index: Index; recovered: boolean }> {
      await fsp.mkdir(dir, { recursive: true });
      const marker = path.join(dir, MARKER);
      const dbDir = path.join(dir, DB_DIR);
      let count: number | undefined;
      try {
        const m = JSON.parse(await fsp.readFile(marker, 'utf8')) as { count?: unknown };
        if (typeof m.count === 'number') count = m.count;
      } catch {
        count = undefined;
      }
      await fsp.rm(marker, { force: true });
      if (clean && count !== undefined) {
        try {
          const db = await openDb(dbDir);
          return { index: new LevelDbIndex(db, dir, count, opts.cacheEntries ?? 100_000), recovered: true };
        } catch (e) {
          warn(`LevelDB index at ${dbDir} cannot be opened (${(e as Error).message}); rebuilding it`);
        }
      }
      // Not trusted: start from an empty directory; the store rebuilds the index.
      await fsp.rm(dbDir, { recursive: true, force: true });
      const db = await openDb(dbDir);
      return { index: new LevelDbIndex(db, dir, 0, opts.cacheEntries ?? 100_000), recovered: false };
    },
  };
}

export const leveldbIndexFactory = levelDbIndexFactory();
