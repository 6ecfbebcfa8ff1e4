/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of
 * store records, queue journal and segment records, and the Bloom filter
 * file (state files are sealed with SHA-256). Chainable: crc32c(b, crc32c(a))
 * === crc32c(concat(a, b)). Returns an unsigned 32-bit value.
 *
 * Inputs of NATIVE_MIN bytes or more go to @node-rs/crc32 (the CPU's CRC32
 * instruction): 4.0 GiB/s on a 5,000-byte body and 5.5 GiB/s on 1 MiB against
 * 0.6 GiB/s for the slice-by-8 table code below, which stays for shorter
 * inputs (a call into native code costs more than it saves under ~128 bytes)
 * and for platforms the package has no binary for.
 */
const NATIVE_MIN = 128;

type NativeCrc = (input: Buffer, initial?: number) => number;

function loadNative(): NativeCrc | undefined {
  try {
    // required, not imported: a missing binary falls back to the table code
    const f = (require('@node-rs/crc32') as { crc32c?: NativeCrc }).crc32c;
    // a binary that loads but computes another polynomial is worse than none
    return f && f(Buffer.from('123456789')) === 0xe3069283 ? f : undefined;
  } catch {
    return undefined;
  }
}

const native = loadNative();

/** Which implementation serves inputs of NATIVE_MIN bytes and more. */
export const crc32cImplementation: 'native' | 'javascript' = native ? 'native' : 'javascript';

export function crc32c(data: Uint8Array, crc = 0): number {
  if (native && data.length >= NATIVE_MIN) {
    return native(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength), crc);
  }
  return crc32cTable(data, crc);
}

const POLY = 0x82f63b78;

const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = [];
  for (let k = 0; k < 8; k++) t.push(new Uint32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let i = 0; i < 8; i++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[0][n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[0][n];
    for (let k = 1; k < 8; k++) {
      c = t[0][c & 0xff] ^ (c >>> 8);
      t[k][n] = c >>> 0;
    }
  }
  return t;
})();

/** The table-driven code: short inputs, and the fallback. */
export function crc32cTable(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;
  let c = ~crc >>> 0;
  let i = 0;
  const n = data.length;
  const end8 = n - (n % 8);
  while (i < end8) {
    const a = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) ^ c;
    const b = data[i + 4] | (data[i + 5] << 8) | (data[i + 6] << 16) | (data[i + 7] << 24);
    c =
      t7[a & 0xff] ^
      t6[(a >>> 8) & 0xff] ^
      t5[(a >>> 16) & 0xff] ^
      t4[a >>> 24] ^
      t3[b & 0xff] ^
      t2[(b >>> 8) & 0xff] ^
      t1[(b >>> 16) & 0xff] ^
      t0[b >>> 24];
    i += 8;
  }
  while (i < n) c = t0[(c ^ data[i++]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
