/**
 * A queue's clean marker (`clean.json`): the terms a clean stop leaves so
 * that the next open need read no segment file. Written by
 * QueueIndex.terminate once its fold is done; read and deleted at the vhost's
 * START (`consumeCleanMarker`), so it is trusted at most once. Its layout is
 * in docs/FORMATS.md ("Queue clean marker"); when an open trusts it is in
 * index-recovery.ts.
 */
import * as path from 'path';
import { sealJson, takeFileIfReadable, unsealJson, writeFileAtomic } from '../store/fs-util';

/** Same name as the store's recovery terms (docs/FORMATS.md says why), another format. */
const QUEUE_CLEAN_MARKER = 'clean.json';
/**
 * Version of the sealed clean marker (unversioned, unsealed markers of 0.1 are
 * not trusted: one scan). Readers take only their own version; a field added
 * without changing the meaning of any other (deliveryCounts) keeps it, so an
 * older reader reads every field it knows correctly and skips the new one.
 */
const CLEAN_VERSION = 2;

export interface CleanTerms {
  nextSeq: number;
  /** Live entries and their bytes. */
  count: number;
  bytes?: number;
  /** Live entries with an expiry. */
  expiring?: number;
  /**
   * Every entry with a lower seq comes back delivered, and counts as delivered
   * once (delivery count 1, unless it has one in deliveryCounts): it may have
   * been delivered before a non-clean recovery set this.
   */
  redeliverBelow?: number;
  /** [seq, count ≥ 1] of the live entries with a delivery count, in seq order (absent: none). */
  deliveryCounts?: [number, number][];
  /** [segment, count, bytes, expiring] of each segment file: a clean start reads none of them. */
  segments?: [number, number, number, number][];
}

/**
 * Reads and deletes a queue's clean marker; undefined if there is none, or it
 * cannot be read or trusted (the open is then non-clean: the index is scanned).
 */
export async function consumeCleanMarker(dir: string): Promise<CleanTerms | undefined> {
  const data = await takeFileIfReadable(path.join(dir, QUEUE_CLEAN_MARKER));
  return data && parseCleanTerms(data);
}

/** Writes the clean marker atomically (temporary file, fsync, rename, directory fsync). */
export async function writeCleanMarker(dir: string, terms: CleanTerms): Promise<void> {
  await writeFileAtomic(path.join(dir, QUEUE_CLEAN_MARKER), sealJson({ version: CLEAN_VERSION, ...terms }));
}

const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
/** Delivery counts on the wire are 32 bits. */
export const MAX_DELIVERY_COUNT = 0xffffffff;
const deliveryCount = (v: unknown): v is number => count(v) && v >= 1 && v <= MAX_DELIVERY_COUNT;

/**
 * A clean marker's terms, or undefined if the bytes are not one: the marker
 * is sealed (a SHA-256 line over its JSON, as the store's state files) and
 * versioned, so a flipped digit is never trusted as a figure.
 */
export function parseCleanTerms(data: Buffer): CleanTerms | undefined {
  const t = unsealJson(data) as (Partial<CleanTerms> & { version?: unknown }) | undefined;
  if (typeof t !== 'object' || t === null || t.version !== CLEAN_VERSION || !count(t.nextSeq) || !count(t.count)) return undefined;
  const terms: CleanTerms = { nextSeq: t.nextSeq, count: t.count };
  if (count(t.bytes)) terms.bytes = t.bytes;
  if (count(t.expiring)) terms.expiring = t.expiring;
  if (count(t.redeliverBelow)) terms.redeliverBelow = t.redeliverBelow;
  if (Array.isArray(t.segments) && t.segments.every((s) => Array.isArray(s) && s.length === 4 && s.every(count))) {
    terms.segments = t.segments;
  }
  if (t.deliveryCounts !== undefined) {
    // Dropping counts would let a message escape its delivery limit: terms with unreadable ones are not trusted at all.
    const dc: unknown = t.deliveryCounts;
    if (!Array.isArray(dc) || !dc.every((e) => Array.isArray(e) && e.length === 2 && count(e[0]) && deliveryCount(e[1]))) return undefined;
    terms.deliveryCounts = dc as [number, number][];
  }
  return terms;
}
