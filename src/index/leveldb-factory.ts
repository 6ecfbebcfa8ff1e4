/**
 * Opening a LevelDB index: its options, and the decision whether the
 * directory a clean stop left can be trusted (both clean records there and
 * agreeing) or must be emptied and rebuilt by the store.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { Level } from 'level';
import { GrowingBloomFilter } from './bloom-filter';
import { Db, LevelDbIndex, LevelDbIndexError, Tuning } from './leveldb';
import { BLOOM, DB_DIR, MARKER, META_CLEAN, parseMeta } from './leveldb-format';
import { Index, IndexFactory } from './types';

export interface LevelDbIndexOptions {
  /** Locations kept in the cache of recently used entries (default 100,000). */
  cacheEntries?: number;
  /** Buffered writes that send a batch to LevelDB (default 16,384). */
  maxPendingWrites?: number;
  /** A smaller batch goes out after this long without one (default 1000 ms). */
  idleFlushMs?: number;
  /** LevelDB's memtable size in bytes (default 2 MiB; LevelDB's own 4 MiB tripled the RSS at 5M entries). */
  writeBufferSize?: number;
  /** LevelDB's block cache in bytes (default 4 MiB). */
  blockCacheSize?: number;
  /** Ids the first Bloom filter layer is sized for (default 65,536); it grows with the index. */
  bloomMinCapacity?: number;
  /** Told when a directory cannot be used and is rebuilt. */
  warn?: (msg: string) => void;
}

async function readAndRemove(file: string): Promise<Buffer | undefined> {
  try {
    return await fsp.readFile(file);
  } catch {
    return undefined;
  } finally {
    await fsp.rm(file, { force: true });
  }
}

/** A LevelDB index factory with these options (levelDbIndexFactory is the one with the defaults). */
export function levelDbIndexWith(opts: LevelDbIndexOptions = {}): IndexFactory {
  const t: Tuning = {
    cacheEntries: opts.cacheEntries ?? 100_000,
    maxPendingWrites: opts.maxPendingWrites ?? 16_384,
    idleFlushMs: opts.idleFlushMs ?? 1000,
    bloomMinCapacity: opts.bloomMinCapacity ?? 65_536,
    warn: opts.warn ?? ((msg: string) => process.emitWarning(msg, 'WarrenLevelDbIndex')),
  };
  const openDb = async (dbDir: string, createIfMissing: boolean): Promise<Db> => {
    const db = new Level<Buffer, Buffer>(dbDir, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      writeBufferSize: opts.writeBufferSize ?? 2 * 1024 * 1024,
      cacheSize: opts.blockCacheSize ?? 4 * 1024 * 1024,
    });
    await db.open({ createIfMissing });
    return db;
  };
  return {
    kind: 'leveldb',
    async open(dir: string, clean: boolean): Promise<{ index: Index; recovered: boolean }> {
      await fsp.mkdir(dir, { recursive: true });
      const dbDir = path.join(dir, DB_DIR);
      // Both consumed now, so that a crash from here on is never taken for a clean state.
      const marker = await readAndRemove(path.join(dir, MARKER));
      const bloomBytes = await readAndRemove(path.join(dir, BLOOM));
      const fileMeta = parseMeta(marker);
      if (clean && fileMeta) {
        let db: Db | undefined;
        try {
          db = await openDb(dbDir, false);
          const inDb = parseMeta(await db.get(META_CLEAN));
          if (!inDb || inDb.generation !== fileMeta.generation || inDb.count !== fileMeta.count) {
            throw new LevelDbIndexError(`its contents are not those its clean marker describes (${inDb ? `generation ${inDb.generation}, ${inDb.count} entries` : 'no clean record inside'})`);
          }
          await db.del(META_CLEAN);
          const bloom = bloomBytes && GrowingBloomFilter.deserialize(bloomBytes);
          return { index: new LevelDbIndex(db, dir, fileMeta.count, bloom, t), recovered: true };
        } catch (e) {
          await db?.close().catch(() => undefined);
          t.warn(`LevelDB index at ${dbDir} cannot be trusted (${(e as Error).message}); rebuilding it`);
        }
      }
      // Not trusted: start from an empty directory; the store rebuilds the index.
      await fsp.rm(dbDir, { recursive: true, force: true });
      const db = await openDb(dbDir, true);
      return { index: new LevelDbIndex(db, dir, 0, GrowingBloomFilter.forCapacity(t.bloomMinCapacity), t), recovered: false };
    },
  };
}

/** The LevelDB index with its default options: the store's index 'leveldb'. */
export const levelDbIndexFactory = levelDbIndexWith();
