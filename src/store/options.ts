/**
 * What a store is opened with, and the check of it: every bad value is
 * refused with an InvalidArgumentError naming the option, before anything on
 * disk is touched.
 */
import * as path from 'path';
import { IndexFactory } from '../index/types';
import { InvalidArgumentError } from './errors';
import { resolveIndex } from './index-registry';
import type { Logger } from '../util/logger';

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
  log?: Logger;
  /** How long a sync waits for others to share its fsync (default 0: none; sync-batcher.ts). */
  syncIntervalMs?: number;
  /**
   * Durability `write`: the current file is fsynced this long after its first
   * unsynced append, whether or not a sync asks (default 0: only when asked).
   */
  backgroundSyncMs?: number;
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

/** The knobs of a running store's writer, group commit and compaction. */
export interface StoreTuning {
  syncIntervalMs: number;
  backgroundSyncMs: number;
  syncBatchSize: number;
  writeBufferSize: number;
  ioChunkSize: number;
}

/** The options checked, with their defaults filled in and `dir` made absolute. */
export interface ResolvedOptions {
  dir: string;
  fileSizeLimit: number;
  tuning: StoreTuning;
  maxOpenFiles: number;
  scanConcurrency: number;
  recoveryRefsInMemory: number;
  clientRefs: readonly string[] | undefined;
  factory: IndexFactory;
  log: Logger;
  writeHints: boolean;
  refDeltas: MessageStoreOptions['refDeltas'];
}

function posInt(v: number | undefined, name: string, def: number, min = 1): number {
  if (v === undefined) return def;
  if (!Number.isSafeInteger(v) || v < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

export function resolveOptions(options: MessageStoreOptions): ResolvedOptions {
  if (!options || typeof options.dir !== 'string' || options.dir === '') throw new InvalidArgumentError('dir must be a non-empty string');
  const fileSizeLimit = posInt(options.fileSizeLimit, 'fileSizeLimit', DEFAULT_FILE_SIZE_LIMIT, 64);
  const tuning: StoreTuning = {
    syncIntervalMs: posInt(options.syncIntervalMs, 'syncIntervalMs', 0, 0),
    backgroundSyncMs: posInt(options.backgroundSyncMs, 'backgroundSyncMs', 0, 0),
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
  return {
    dir: path.resolve(options.dir),
    fileSizeLimit,
    tuning,
    maxOpenFiles,
    scanConcurrency,
    recoveryRefsInMemory,
    clientRefs: options.clientRefs,
    factory: resolveIndex(options.index),
    log: options.log ?? (() => undefined),
    writeHints: options.writeHints !== false,
    refDeltas: options.refDeltas,
  };
}
