/**
 * In-memory message-location index (the reference's ets index). On clean
 * shutdown the whole map is written to one file with a digest; the next clean
 * start loads it and deletes the file, so it is trusted at most once.
 */
import { promises as fsp } from 'fs';
import { takeFileIfReadable, writeFileAtomic } from '../util/durable-file';
import * as path from 'path';
import { createHash } from 'crypto';
import { Index, IndexFactory, keyOf, MsgId, MsgLocation, MsgLocationFields } from './types';

export const MEMORY_INDEX_FILE = 'memory-index.bin';
const MAGIC = 0x57524d49; // "WRMI"
const VERSION = 1;
const ENTRY_SIZE = 16 + 4 + 4 + 8 + 4;
const HEADER_SIZE = 4 + 4 + 8;
const DIGEST_SIZE = 32;

export class MemoryIndex implements Index {
  readonly kind = 'memory';
  private readonly map = new Map<string, MsgLocation>();

  constructor(private readonly dir: string) {}

  async lookup(id: MsgId): Promise<MsgLocation | undefined> {
    return this.lookupNow(id);
  }

  lookupNow(id: MsgId): MsgLocation | undefined {
    const l = this.map.get(keyOf(id));
    return l ? { ...l } : undefined;
  }

  insert(id: MsgId, loc: MsgLocation): void {
    const k = keyOf(id);
    if (this.map.has(k)) throw new Error(`index insert: id ${id.toString('hex')} already present`);
    this.map.set(k, { ...loc });
  }

  update(id: MsgId, loc: MsgLocation): void {
    this.map.set(keyOf(id), { ...loc });
  }

  async updateFields(id: MsgId, fields: MsgLocationFields): Promise<void> {
    const l = this.map.get(keyOf(id));
    if (!l) return;
    if (fields.refCount !== undefined) l.refCount = fields.refCount;
    if (fields.file !== undefined) l.file = fields.file;
    if (fields.offset !== undefined) l.offset = fields.offset;
    if (fields.totalSize !== undefined) l.totalSize = fields.totalSize;
  }

  delete(id: MsgId): void {
    this.map.delete(keyOf(id));
  }

  async deleteByFile(files: readonly number[]): Promise<void> {
    const set = new Set(files);
    for (const [k, l] of this.map) if (set.has(l.file)) this.map.delete(k);
  }

  async *entries(): AsyncIterable<[MsgId, MsgLocation]> {
    for (const [k, l] of [...this.map]) yield [Buffer.from(k, 'latin1'), { ...l }];
  }

  size(): number {
    return this.map.size;
  }

  async flush(): Promise<void> {}

  async terminate(): Promise<void> {
    const buf = Buffer.allocUnsafe(HEADER_SIZE + this.map.size * ENTRY_SIZE + DIGEST_SIZE);
    buf.writeUInt32BE(MAGIC, 0);
    buf.writeUInt32BE(VERSION, 4);
    buf.writeBigUInt64BE(BigInt(this.map.size), 8);
    let p = HEADER_SIZE;
    for (const [k, l] of this.map) {
      buf.write(k, p, 16, 'latin1');
      // file is UNPLACED_FILE (0xffffffff) only transiently during a rebuild, never at shutdown
      buf.writeUInt32BE(l.refCount, p + 16);
      buf.writeUInt32BE(l.file, p + 20);
      buf.writeBigUInt64BE(BigInt(l.offset), p + 24);
      buf.writeUInt32BE(l.totalSize, p + 32);
      p += ENTRY_SIZE;
    }
    createHash('sha256').update(buf.subarray(0, p)).digest().copy(buf, p);
    await fsp.mkdir(this.dir, { recursive: true });
    await writeFileAtomic(path.join(this.dir, MEMORY_INDEX_FILE), buf);
  }

  async clear(): Promise<void> {
    this.map.clear();
  }

  async abandon(): Promise<void> {
    this.map.clear();
  }

  /** Loads a terminated index; false if absent or garbled (the map is then left empty). */
  async load(): Promise<boolean> {
    const map = decodeMemoryIndex(await takeFileIfReadable(path.join(this.dir, MEMORY_INDEX_FILE)));
    if (!map) return false;
    for (const [k, l] of map) this.map.set(k, l);
    return true;
  }
}

/** The entries of a memory-index.bin (keyed as keyOf), or undefined if absent or garbled. */
export function decodeMemoryIndex(buf: Buffer | undefined): Map<string, MsgLocation> | undefined {
  if (!buf) return undefined;
  if (buf.length < HEADER_SIZE + DIGEST_SIZE || buf.readUInt32BE(0) !== MAGIC || buf.readUInt32BE(4) !== VERSION) return undefined;
  const n = Number(buf.readBigUInt64BE(8));
  const end = HEADER_SIZE + n * ENTRY_SIZE;
  if (buf.length !== end + DIGEST_SIZE) return undefined;
  if (!createHash('sha256').update(buf.subarray(0, end)).digest().equals(buf.subarray(end))) return undefined;
  const map = new Map<string, MsgLocation>();
  for (let p = HEADER_SIZE; p < end; p += ENTRY_SIZE) {
    map.set(buf.toString('latin1', p, p + 16), {
      refCount: buf.readUInt32BE(p + 16),
      file: buf.readUInt32BE(p + 20),
      offset: Number(buf.readBigUInt64BE(p + 24)),
      totalSize: buf.readUInt32BE(p + 32),
    });
  }
  return map;
}

export const memoryIndexFactory: IndexFactory = {
  kind: 'memory',
  async open(dir: string, clean: boolean): Promise<{ index: Index; recovered: boolean }> {
    await fsp.mkdir(dir, { recursive: true });
    const index = new MemoryIndex(dir);
    if (clean && (await index.load())) return { index, recovered: true };
    await index.clear();
    await fsp.rm(path.join(dir, MEMORY_INDEX_FILE), { force: true });
    return { index, recovered: false };
  },
};
