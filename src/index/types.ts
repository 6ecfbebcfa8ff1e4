/**
 * The message-location index: where each stored message lives and how many
 * references it has. The store owns the only instance for its directory and is
 * its only writer; the index is a cache of what the segment files hold, so a
 * non-clean start throws it away and the store rebuilds it from the files.
 *
 * Writes (insert/update/updateFields/delete) are synchronous and must be visible
 * to every later lookup at once (read-your-writes); an implementation may buffer
 * them and persist them in batches. Lookups are async so that an implementation
 * can go to disk.
 */

/** 16-byte message id, as RabbitMQ's msg id (a guid). */
export type MsgId = Buffer;

/** The id as a Map key (latin1 keeps every byte), for every cache and map of ids. */
export function keyOf(id: MsgId): string {
  return id.toString('latin1');
}

export interface MsgLocation {
  /** Number of references (writes not yet matched by a remove). 0 = garbage. */
  refCount: number;
  /** Segment file number holding the record. */
  file: number;
  /** Byte offset of the record within the file. */
  offset: number;
  /** Size of the whole record on disk (header + body), in bytes. */
  totalSize: number;
}

export type MsgLocationFields = Partial<MsgLocation>;

/** lookupNow's answer when only lookup() can tell (a disk read). */
export const NOT_IN_MEMORY: unique symbol = Symbol('not in memory');

export interface Index {
  /** Human-readable name for logs and stats ('memory', 'leveldb'). */
  readonly kind: string;

  lookup(id: MsgId): Promise<MsgLocation | undefined>;
  /**
   * lookup() answered from memory alone, at once (a copy of the entry, or
   * undefined when it is known absent); NOT_IN_MEMORY when that needs a
   * disk read. The store's hot paths take it to apply a write or a remove
   * without waiting a turn.
   */
  lookupNow(id: MsgId): MsgLocation | undefined | typeof NOT_IN_MEMORY;
  /** Add a new entry; the id must not be present. */
  insert(id: MsgId, loc: MsgLocation): void;
  /** Replace an entry (present or not). */
  update(id: MsgId, loc: MsgLocation): void;
  /** Change some fields of a present entry; a missing id is a no-op. */
  updateFields(id: MsgId, fields: MsgLocationFields): Promise<void>;
  delete(id: MsgId): void;
  /** Delete every entry whose location is in one of these files. */
  deleteByFile(files: readonly number[]): Promise<void>;
  /** Iterate every entry (used by stats, verification and tests). */
  entries(): AsyncIterable<[MsgId, MsgLocation]>;
  /** Number of entries, if known cheaply (memory: exact; leveldb: maintained count). */
  size(): number;

  /** Persist buffered writes (no fsync promise: the index is rebuildable). */
  flush(): Promise<void>;
  /**
   * Clean shutdown: persist everything and leave a marker so that `recover`
   * can trust the state next time.
   */
  terminate(): Promise<void>;
  /** Drop all entries (non-clean start, before a rebuild). */
  clear(): Promise<void>;
  /**
   * Release every resource without marking the state clean (a simulated crash
   * in tests, or a store that failed): the next open is not trusted.
   */
  abandon(): Promise<void>;
  /** What the implementation did and holds (batches, disk reads, caches), for operators; optional. */
  stats?(): Readonly<Record<string, number | boolean>>;
}

/**
 * Opens an index in `dir` (a directory reserved for it). `clean` says whether
 * the store believes the previous shutdown was clean; the factory returns
 * `recovered: true` only if it could load that clean state intact. When
 * `recovered` is false the index is empty and the store rebuilds it.
 */
export interface IndexFactory {
  readonly kind: string;
  open(dir: string, clean: boolean): Promise<{ index: Index; recovered: boolean }>;
}
