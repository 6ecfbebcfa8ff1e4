/**
 * How the LevelDB index lays out its data (docs/FORMATS.md, "LevelDB index"):
 * the names of its directory and clean-state files, its key and value
 * encoding, and the clean record kept inside LevelDB and in the marker file.
 */
import { MsgLocation } from './types';

export const DB_DIR = 'leveldb';
export const MARKER = 'leveldb-clean.json';
export const BLOOM = 'leveldb-bloom.bin';
export const VALUE_BYTES = 18;
export const KEY_FIRST = Buffer.from([0x6d]); // 'm'
export const KEY_END = Buffer.from([0x6e]);
/**
 * Written (synced) inside LevelDB at a clean stop, with the same generation
 * as the marker file beside it: the index is trusted only if both are there
 * and agree, so a deleted, emptied or swapped LevelDB directory is rebuilt.
 */
export const META_CLEAN = Buffer.from('!clean');

/** 'm' + the 16-byte id (given as its latin1 key). */
export function primaryKey(k: string): Buffer {
  const b = Buffer.allocUnsafe(17);
  b[0] = 0x6d;
  b.write(k, 1, 16, 'latin1');
  return b;
}

export function encode(l: MsgLocation): Buffer {
  const v = Buffer.allocUnsafe(VALUE_BYTES);
  v.writeUInt32BE(l.refCount, 0);
  v.writeUInt32BE(l.file, 4);
  v.writeUIntBE(l.offset, 8, 6);
  v.writeUInt32BE(l.totalSize, 14);
  return v;
}

export function decode(v: Buffer): MsgLocation {
  return { refCount: v.readUInt32BE(0), file: v.readUInt32BE(4), offset: v.readUIntBE(8, 6), totalSize: v.readUInt32BE(14) };
}

export interface CleanMeta {
  count: number;
  generation: string;
}

/** The clean record of a LevelDB index (marker file or the key inside), or undefined. */
export function parseMeta(b: Buffer | undefined): CleanMeta | undefined {
  try {
    const m = JSON.parse(b?.toString('utf8') ?? 'null') as Partial<CleanMeta> | null;
    if (typeof m?.count === 'number' && typeof m.generation === 'string') return { count: m.count, generation: m.generation };
  } catch {
    // garbled: not trusted
  }
  return undefined;
}
