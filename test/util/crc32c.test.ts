import { randomBytes } from 'crypto';
import { crc32c, crc32cImplementation, crc32cTable } from '../../src/util/crc32c';

describe('crc32c', () => {
  it('uses the native code on this machine', () => {
    // the package ships a linux-x64 binary: falling back here would be a silent slowdown
    expect(crc32cImplementation).toBe('native');
  });

  it('matches the published check values', () => {
    // RFC 3720 B.4 and the usual "123456789" check value
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.alloc(4096, 0))).toBe(crc32cTable(Buffer.alloc(4096, 0)));
  });

  it('agrees with the table code at every length around the switch, chained or not, on Buffers and plain arrays', () => {
    for (let n = 0; n <= 1100; n += n < 300 ? 1 : 37) {
      const b = randomBytes(n);
      const want = crc32cTable(b);
      expect(crc32c(b)).toBe(want);
      expect(crc32c(new Uint8Array(b))).toBe(want);
      const cut = n >> 1;
      expect(crc32c(b.subarray(cut), crc32c(b.subarray(0, cut)))).toBe(want);
      // a view into the middle of a larger buffer
      const big = Buffer.concat([randomBytes(7), b, randomBytes(5)]);
      expect(crc32c(big.subarray(7, 7 + n))).toBe(want);
    }
  });
});
