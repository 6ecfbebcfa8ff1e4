/**
 * Records of a queue's journal: what happened to each persistent message of a
 * durable queue. Each record is framed as
 *
 *     PayloadLen:32, CRC32C(payload):32, Payload
 *
 * so a torn tail or a flipped bit is detected and replay stops there.
 */
import { crc32c } from '../store/crc32c';

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

export function encodePublish(e: JournalEntry): Buffer {
  const p = Buffer.allocUnsafe(PUBLISH_LEN);
  p.writeUInt8(RecordType.PUBLISH, 0);
  p.writeBigUInt64BE(BigInt(e.seq), 1);
  p.writeUInt8(e.flags, 9);
  p.writeBigInt64BE(BigInt(e.expiry), 10);
  p.writeUInt32BE(e.size, 18);
  e.id.copy(p, 22, 0, 16);
  return frame(p);
}

export function encodeSeqs(type: typeof RecordType.DELIVER | typeof RecordType.ACK, seqs: readonly number[]): Buffer {
  const p = Buffer.allocUnsafe(1 + 4 + 8 * seqs.length);
  p.writeUInt8(type, 0);
  p.writeUInt32BE(seqs.length, 1);
  for (let i = 0; i < seqs.length; i++) p.writeBigUInt64BE(BigInt(seqs[i]), 5 + 8 * i);
  return frame(p);
}

function decodePayload(p: Buffer): JournalRecord | undefined {
  if (p.length < 1) return undefined;
  const type = p.readUInt8(0);
  if (type === RecordType.PUBLISH) {
    if (p.length !== PUBLISH_LEN) return undefined;
    return {
      type,
      entry: {
        seq: Number(p.readBigUInt64BE(1)),
        flags: p.readUInt8(9),
        expiry: Number(p.readBigInt64BE(10)),
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
    for (let i = 0; i < n; i++) seqs[i] = Number(p.readBigUInt64BE(5 + 8 * i));
    return { type, seqs };
  }
  return undefined;
}

export interface DecodeResult {
  records: JournalRecord[];
  /** Bytes of `buf` made of whole, valid records. */
  validBytes: number;
  /** Why decoding stopped early, if it did. */
  stop?: 'torn' | 'checksum' | 'malformed';
}

/** Decodes records from the start of `buf`, stopping at the first bad one. */
export function decodeRecords(buf: Buffer): DecodeResult {
  const records: JournalRecord[] = [];
  let pos = 0;
  while (pos < buf.length) {
    if (pos + HEADER > buf.length) return { records, validBytes: pos, stop: 'torn' };
    const len = buf.readUInt32BE(pos);
    if (pos + HEADER + len > buf.length) return { records, validBytes: pos, stop: 'torn' };
    const payload = buf.subarray(pos + HEADER, pos + HEADER + len);
    if (crc32c(payload) !== buf.readUInt32BE(pos + 4)) return { records, validBytes: pos, stop: 'checksum' };
    const rec = decodePayload(payload);
    if (!rec) return { records, validBytes: pos, stop: 'malformed' };
    records.push(rec);
    pos += HEADER + len;
  }
  return { records, validBytes: pos };
}
