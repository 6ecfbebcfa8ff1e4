/**
 * Records of a queue's journal: what happened to each persistent message of a
 * durable queue. Each record is framed as
 *
 *     PayloadLen:32, CRC32C(payload):32, Payload
 *
 * so a torn tail or a flipped bit is detected. A damaged record is skipped
 * and decoding resynchronises on the next valid record (every record is
 * CRC-framed), so one bad record never hides the good ones behind it.
 */
import { crc32c } from '../util/crc32c';
import { readInt64BE, readUInt64BE, writeInt64BE, writeUInt64BE } from '../util/int64';
import { nextTurn, turnBudget } from '../util/turn-budget';

export const RecordType = { PUBLISH: 1, DELIVER: 2, ACK: 3 } as const;

export interface JournalEntry {
  seq: number;
  id: Buffer;
  /** Protocol flags (persistent, needs_confirming, delivered). */
  flags: number;
  expiry: number;
  size: number;
}

export type JournalRecord =
  | { type: typeof RecordType.PUBLISH; entry: JournalEntry }
  | { type: typeof RecordType.DELIVER | typeof RecordType.ACK; seqs: number[] };

const HEADER = 8;
const PUBLISH_LEN = 1 + 8 + 1 + 8 + 4 + 16;

function frame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.writeUInt32BE(crc32c(payload), 4);
  payload.copy(out, HEADER);
  return out;
}

/** Bytes of one framed publish record. */
export const PUBLISH_RECORD_BYTES = HEADER + PUBLISH_LEN;

/** Writes e's framed publish record at `off` of `out` (PUBLISH_RECORD_BYTES bytes), with no buffer of its own. */
export function encodePublishInto(out: Buffer, off: number, e: JournalEntry): void {
  const p = off + HEADER;
  out[p] = RecordType.PUBLISH;
  writeUInt64BE(out, e.seq, p + 1);
  out[p + 9] = e.flags;
  writeInt64BE(out, e.expiry, p + 10);
  out.writeUInt32BE(e.size, p + 18);
  e.id.copy(out, p + 22, 0, 16);
  out.writeUInt32BE(PUBLISH_LEN, off);
  out.writeUInt32BE(crc32c(out.subarray(p, p + PUBLISH_LEN)), off + 4);
}

export function encodePublish(e: JournalEntry): Buffer {
  const out = Buffer.allocUnsafe(PUBLISH_RECORD_BYTES);
  encodePublishInto(out, 0, e);
  return out;
}

/**
 * A queue index segment's bytes: every entry's publish record, in one buffer.
 * A segment holds up to 16,384 entries (~10 ms to encode): the work goes on
 * in the next turn whenever the turn's budget is spent (turn-budget.ts).
 */
export async function encodePublishes(entries: readonly JournalEntry[]): Promise<Buffer> {
  const out = Buffer.allocUnsafe(entries.length * PUBLISH_RECORD_BYTES);
  for (let i = 0; i < entries.length; i++) {
    if ((i & 255) === 255 && turnBudget.spent()) await nextTurn();
    encodePublishInto(out, i * PUBLISH_RECORD_BYTES, entries[i]);
  }
  return out;
}

export function encodeSeqs(type: typeof RecordType.DELIVER | typeof RecordType.ACK, seqs: readonly number[]): Buffer {
  const p = Buffer.allocUnsafe(1 + 4 + 8 * seqs.length);
  p.writeUInt8(type, 0);
  p.writeUInt32BE(seqs.length, 1);
  for (let i = 0; i < seqs.length; i++) writeUInt64BE(p, seqs[i], 5 + 8 * i);
  return frame(p);
}

function decodePayload(p: Buffer): JournalRecord | undefined {
  if (p.length < 1) return undefined;
  const type = p.readUInt8(0);
  if (type === RecordType.PUBLISH) {
    if (p.length !== PUBLISH_LEN) return undefined;
    const seq = readUInt64BE(p, 1);
    const expiry = readInt64BE(p, 10);
    if (seq === undefined || expiry === undefined) return undefined;
    return {
      type,
      entry: {
        seq,
        flags: p.readUInt8(9),
        expiry,
        size: p.readUInt32BE(18),
        id: Buffer.from(p.subarray(22, 38)),
      },
    };
  }
  if (type === RecordType.DELIVER || type === RecordType.ACK) {
    if (p.length < 5) return undefined;
    const n = p.readUInt32BE(1);
    if (p.length !== 5 + 8 * n) return undefined;
    const seqs = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const seq = readUInt64BE(p, 5 + 8 * i);
      if (seq === undefined) return undefined;
      seqs[i] = seq;
    }
    return { type, seqs };
  }
  return undefined;
}

export type Damage = 'torn' | 'checksum' | 'malformed';

/** A stretch of bytes that holds no valid record. */
export interface DamagedRange {
  offset: number;
  bytes: number;
  reason: Damage;
}

export interface JournalDecodeResult {
  records: JournalRecord[];
  /** Bytes of `buf` up to the end of the last valid record: what a reader keeps. */
  validBytes: number;
  /** Damaged ranges between valid records, skipped. */
  skipped: DamagedRange[];
  /** Damage after the last valid record (a torn or corrupt tail), cut by a reader. */
  tail?: DamagedRange;
  /** Where decoding stopped: buf.length, or the next record's offset once maxRecords were decoded. */
  end: number;
}

/** The record at `pos`, or why there is none. */
function recordAt(buf: Buffer, pos: number): { rec: JournalRecord; next: number } | Damage {
  if (pos + HEADER > buf.length) return 'torn';
  const len = buf.readUInt32BE(pos);
  if (pos + HEADER + len > buf.length) return 'torn';
  const payload = buf.subarray(pos + HEADER, pos + HEADER + len);
  if (crc32c(payload) !== buf.readUInt32BE(pos + 4)) return 'checksum';
  const rec = decodePayload(payload);
  if (!rec) return 'malformed';
  return { rec, next: pos + HEADER + len };
}

/** Could a record start at `pos`? A cheap test of the length and type before the checksum. */
function plausible(buf: Buffer, pos: number): boolean {
  if (pos + HEADER + 1 > buf.length) return false;
  const len = buf.readUInt32BE(pos);
  if (pos + HEADER + len > buf.length) return false;
  const type = buf.readUInt8(pos + HEADER);
  if (type === RecordType.PUBLISH) return len === PUBLISH_LEN;
  if (type === RecordType.DELIVER || type === RecordType.ACK) return len >= 5 && pos + HEADER + 5 <= buf.length && len === 5 + 8 * buf.readUInt32BE(pos + HEADER + 1);
  return false;
}

/**
 * Decodes every valid record of `buf` from offset `from` (a record's start),
 * at most `maxRecords` of them (a caller that decodes a large file in slices
 * continues at `end`). Damaged bytes are skipped up to the next offset where
 * a whole record passes its checksum; damage with no valid record after it
 * is the tail.
 */
export function decodeRecords(buf: Buffer, from = 0, maxRecords = Infinity): JournalDecodeResult {
  const records: JournalRecord[] = [];
  const skipped: DamagedRange[] = [];
  let pos = from;
  let validBytes = from;
  while (pos < buf.length && records.length < maxRecords) {
    const r = recordAt(buf, pos);
    if (typeof r !== 'string') {
      records.push(r.rec);
      pos = validBytes = r.next;
      continue;
    }
    let next = -1;
    for (let q = pos + 1; q + HEADER < buf.length; q++) {
      if (plausible(buf, q) && typeof recordAt(buf, q) !== 'string') {
        next = q;
        break;
      }
    }
    if (next < 0) return { records, validBytes, skipped, tail: { offset: pos, bytes: buf.length - pos, reason: r }, end: buf.length };
    skipped.push({ offset: pos, bytes: next - pos, reason: r });
    pos = next;
  }
  return { records, validBytes, skipped, end: pos };
}
