/**
 * One message record in a segment file:
 *
 *     Magic:32  BodyLen:32  CRC32C(BodyLen ‖ Id ‖ Body):32  Id:128  Body
 *
 * All integers big-endian. The magic lets a scan find the next record after a
 * damaged one; the CRC covers the length so a torn or flipped length is caught.
 *
 * A filler covers bytes that hold no record, so that a scan passes over them
 * as it passes over a record instead of reporting damage:
 *
 *     FillerMagic:32  Len:32  CRC32C(Len):32  Zero:128  Len bytes, never read
 *
 * Recovery writes one over a region of the current file that a crash left
 * holding no intact record (a flush's writes are in flight at once, so a later
 * one can land without an earlier one). It is never indexed and never read, and
 * compaction drops it like any record no index entry points at.
 */
import { crc32c } from '../util/crc32c';

export const RECORD_MAGIC = 0xd7a5c3e1;
export const ID_SIZE = 16;
export const HEADER_SIZE = 12 + ID_SIZE;
export const MAX_BODY_SIZE = 0xffffffff - HEADER_SIZE;

export const FILLER_MAGIC = 0x5e6d0f11;
const MAGIC_BYTES = Buffer.from([0xd7, 0xa5, 0xc3, 0xe1]);

export function recordSize(bodyLength: number): number {
  return HEADER_SIZE + bodyLength;
}

function checksum(header: Buffer, body: Uint8Array): number {
  // BodyLen (4..8) and Id (12..28) then the body
  const c = crc32c(header.subarray(12, HEADER_SIZE), crc32c(header.subarray(4, 8)));
  return crc32c(body, c);
}

/** The header for `body`; the record on disk is header ‖ body. */
export function encodeHeader(id: Buffer, body: Buffer): Buffer {
  const h = Buffer.allocUnsafe(HEADER_SIZE);
  h.writeUInt32BE(RECORD_MAGIC, 0);
  h.writeUInt32BE(body.length, 4);
  id.copy(h, 12, 0, ID_SIZE);
  h.writeUInt32BE(checksum(h, body), 8);
  return h;
}

/** The header of a filler spanning `totalSize` bytes (≥ HEADER_SIZE) from where it is written. */
export function encodeFillerHeader(totalSize: number): Buffer {
  if (totalSize < HEADER_SIZE) throw new RangeError(`a filler needs ${HEADER_SIZE} bytes, not ${totalSize}`);
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt32BE(FILLER_MAGIC, 0);
  h.writeUInt32BE(totalSize - HEADER_SIZE, 4);
  h.writeUInt32BE(crc32c(h.subarray(4, 8)), 8);
  return h;
}

export function encodeRecord(id: Buffer, body: Buffer): Buffer {
  return Buffer.concat([encodeHeader(id, body), body]);
}

export type RecordDecodeResult =
  | { kind: 'ok'; id: Buffer; body: Buffer; totalSize: number }
  /** Not enough bytes for the header, or for the body the header announces. */
  | { kind: 'short'; need: number }
  /** Wrong magic: not the start of a record. */
  | { kind: 'bad-magic' }
  /** A complete record whose checksum does not match. */
  | { kind: 'bad-checksum'; totalSize: number }
  /** A filler's header (its span is not read): `totalSize` bytes to pass over. */
  | { kind: 'filler'; totalSize: number };

/** Decodes the record starting at `pos` of `buf` (body and id are views into `buf`). */
export function decodeRecord(buf: Buffer, pos = 0): RecordDecodeResult {
  if (buf.length - pos < HEADER_SIZE) return { kind: 'short', need: HEADER_SIZE };
  const magic = buf.readUInt32BE(pos);
  if (magic === FILLER_MAGIC) {
    const ok = crc32c(buf.subarray(pos + 4, pos + 8)) === buf.readUInt32BE(pos + 8) && buf.subarray(pos + 12, pos + HEADER_SIZE).every((b) => b === 0);
    return ok ? { kind: 'filler', totalSize: HEADER_SIZE + buf.readUInt32BE(pos + 4) } : { kind: 'bad-magic' };
  }
  if (magic !== RECORD_MAGIC) return { kind: 'bad-magic' };
  const len = buf.readUInt32BE(pos + 4);
  const totalSize = HEADER_SIZE + len;
  if (buf.length - pos < totalSize) return { kind: 'short', need: totalSize };
  const header = buf.subarray(pos, pos + HEADER_SIZE);
  const body = buf.subarray(pos + HEADER_SIZE, pos + totalSize);
  if (checksum(header, body) !== buf.readUInt32BE(pos + 8)) return { kind: 'bad-checksum', totalSize };
  return { kind: 'ok', id: buf.subarray(pos + 12, pos + HEADER_SIZE), body, totalSize };
}

/** Index of the next possible record start at or after `from`, or -1. */
export function findMagic(buf: Buffer, from: number): number {
  return buf.indexOf(MAGIC_BYTES, from);
}
