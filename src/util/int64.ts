/**
 * 64-bit big-endian integers as JavaScript numbers, written and read as two
 * 32-bit halves: the wire and file formats hold u64/i64 fields (seqs, file
 * offsets, expiry times) whose values Warren keeps within 2^53. Buffer's
 * BigInt methods allocate a BigInt each way, ~2.5× the cost, on paths that
 * run for every message (frames, journal records, queue index segments).
 */
const TWO_32 = 0x1_0000_0000;

/** Writes v (an integer in [0, 2^53)) as a u64. */
export function writeUInt64BE(buf: Buffer, v: number, off: number): void {
  buf.writeUInt32BE(Math.floor(v / TWO_32), off);
  buf.writeUInt32BE(v >>> 0, off + 4);
}

/** Writes v (an integer of magnitude below 2^53) as an i64, two's complement. */
export function writeInt64BE(buf: Buffer, v: number, off: number): void {
  const hi = Math.floor(v / TWO_32);
  buf.writeInt32BE(hi, off);
  buf.writeUInt32BE(v - hi * TWO_32, off + 4);
}

/** A u64 as a number; undefined when it is above Number.MAX_SAFE_INTEGER (it would not be exact). */
export function readUInt64BE(buf: Buffer, off: number): number | undefined {
  const hi = buf.readUInt32BE(off);
  if (hi > 0x1f_ffff) return undefined;
  return hi * TWO_32 + buf.readUInt32BE(off + 4);
}

/** An i64 as a number; undefined when its magnitude is above Number.MAX_SAFE_INTEGER. */
export function readInt64BE(buf: Buffer, off: number): number | undefined {
  const hi = buf.readInt32BE(off);
  if (hi > 0x1f_ffff || hi < -0x20_0000) return undefined;
  const v = hi * TWO_32 + buf.readUInt32BE(off + 4);
  return v < Number.MIN_SAFE_INTEGER ? undefined : v;
}
