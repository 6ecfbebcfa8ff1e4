/**
 * A stopped store's message-location index as a clean stop left it, read
 * without changing a byte of it (for `warren inspect` and `warren verify`).
 * The index's own open consumes its clean state; this does not: the memory
 * index's file is only read, and a LevelDB database is opened from a copy,
 * since LevelDB writes to its directory (a new log, MANIFEST, LOCK) on open.
 */
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Level } from 'level';
import { readFileIfPresent } from '../util/durable-file';
import { decodeMemoryIndex, MEMORY_INDEX_FILE } from './memory';
import { BLOOM, DB_DIR, decode, KEY_END, KEY_FIRST, MARKER, META_CLEAN, parseMeta, VALUE_BYTES } from './leveldb-format';
import { MsgLocation } from './types';

export interface IndexAtRest {
  kind: 'memory' | 'leveldb' | 'none';
  /** Whether a clean stop's state is there and whole (a start would trust it, if the store's terms agree). */
  clean: boolean;
  /** Why it is not clean, in words. */
  reason?: string;
  /** Entries the clean state says it holds. */
  count?: number;
  /** Bytes of the index's files on disk. */
  bytes: number;
  bloomFilter?: boolean;
}

async function duBytes(p: string): Promise<number> {
  let st;
  try {
    st = await fsp.stat(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const name of await fsp.readdir(p)) n += await duBytes(path.join(p, name));
  return n;
}

/**
 * Which index the store's `index/` directory holds and whether its clean
 * state is whole. For LevelDB, "whole" means the marker file parses and the
 * database (opened from a copy) holds the same clean record.
 */
export async function describeIndex(indexDir: string): Promise<IndexAtRest> {
  const bytes = await duBytes(indexDir);
  const mem = await readFileIfPresent(path.join(indexDir, MEMORY_INDEX_FILE));
  if (mem) {
    const map = decodeMemoryIndex(mem);
    return map ? { kind: 'memory', clean: true, count: map.size, bytes } : { kind: 'memory', clean: false, reason: `${MEMORY_INDEX_FILE} is garbled (its digest or length does not match)`, bytes };
  }
  const hasDb = (await duBytes(path.join(indexDir, DB_DIR))) > 0;
  if (!hasDb) return { kind: 'none', clean: false, reason: 'no index state (memory index without a clean stop, or never opened)', bytes };
  const marker = parseMeta(await readFileIfPresent(path.join(indexDir, MARKER)));
  const bloomFilter = (await readFileIfPresent(path.join(indexDir, BLOOM))) !== undefined;
  if (!marker) return { kind: 'leveldb', clean: false, reason: `no valid ${MARKER} (not stopped cleanly, or in use)`, bytes, bloomFilter };
  const inDb = await withLevelDbCopy(indexDir, async (db) => parseMeta(await db.get(META_CLEAN)));
  if (!inDb || inDb.generation !== marker.generation || inDb.count !== marker.count) {
    return { kind: 'leveldb', clean: false, reason: `the database's clean record does not match ${MARKER}`, count: marker.count, bytes, bloomFilter };
  }
  return { kind: 'leveldb', clean: true, count: marker.count, bytes, bloomFilter };
}

type Db = Level<Buffer, Buffer>;

/** Runs `fn` on a LevelDB database opened from a throw-away copy of `<indexDir>/leveldb`. */
async function withLevelDbCopy<T>(indexDir: string, fn: (db: Db) => Promise<T>): Promise<T> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'warren-index-'));
  try {
    const copy = path.join(tmp, DB_DIR);
    await fsp.cp(path.join(indexDir, DB_DIR), copy, { recursive: true });
    await fsp.rm(path.join(copy, 'LOCK'), { force: true });
    const db = new Level<Buffer, Buffer>(copy, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open({ createIfMissing: false });
    try {
      return await fn(db);
    } finally {
      await db.close();
    }
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Every entry of a clean index at rest, as (latin1 key, location), handed to
 * `each` in key order for LevelDB, map order for memory. Throws if the index
 * is not clean (there is nothing to trust then: a start rebuilds it).
 */
export async function forEachIndexEntry(indexDir: string, each: (key: string, loc: MsgLocation) => void): Promise<void> {
  const mem = decodeMemoryIndex(await readFileIfPresent(path.join(indexDir, MEMORY_INDEX_FILE)));
  if (mem) {
    for (const [k, l] of mem) each(k, l);
    return;
  }
  await withLevelDbCopy(indexDir, async (db) => {
    for await (const [k, v] of db.iterator({ gte: KEY_FIRST, lt: KEY_END })) {
      if (k.length !== 17 || v.length !== VALUE_BYTES) throw new Error(`LevelDB index ${path.join(indexDir, DB_DIR)}: a malformed entry (key ${k.toString('hex')}, ${v.length}-byte value)`);
      each(k.toString('latin1', 1), decode(v));
    }
  });
}
