import { readInt64BE, readUInt64BE, writeInt64BE, writeUInt64BE } from '../../src/util/int64';
import { rng } from '../random';

describe('64-bit integers as two halves', () => {
  const b = Buffer.alloc(8);
  const edges = [0, 1, -1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, -(2 ** 32), -(2 ** 32) - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];

  it('write the bytes Buffer writes for the same BigInt, and read back the number', () => {
    const r = rng(7);
    const values = [...edges, ...Array.from({ length: 5000 }, () => Math.floor((r() * 2 - 1) * Number.MAX_SAFE_INTEGER))];
    for (const v of values) {
      writeInt64BE(b, v, 0);
      expect([v, b.readBigInt64BE(0)]).toEqual([v, BigInt(v)]);
      expect([v, readInt64BE(b, 0)]).toEqual([v, v]);
      if (v < 0) continue;
      writeUInt64BE(b, v, 0);
      expect([v, b.readBigUInt64BE(0)]).toEqual([v, BigInt(v)]);
      expect([v, readUInt64BE(b, 0)]).toEqual([v, v]);
    }
  });

  it('read nothing for a value a number cannot hold exactly', () => {
    for (const big of [2n ** 53n, 2n ** 63n, 2n ** 64n - 1n]) {
      b.writeBigUInt64BE(big, 0);
      expect([big, readUInt64BE(b, 0)]).toEqual([big, undefined]);
    }
    for (const big of [2n ** 53n, -(2n ** 53n), 2n ** 63n - 1n, -(2n ** 63n)]) {
      b.writeBigInt64BE(big, 0);
      expect([big, readInt64BE(b, 0)]).toEqual([big, undefined]);
    }
  });
});
