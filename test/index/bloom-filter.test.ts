import { randomBytes } from 'crypto';
import { BloomFilter, GrowingBloomFilter } from '../../src/index/bloom-filter';

const seqId = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n, 12);
  return b;
};

describe('Bloom filter', () => {
  it('never forgets an id, for random and for sequential ids', () => {
    const f = BloomFilter.forCapacity(20_000);
    const ids = [...Array.from({ length: 10_000 }, () => randomBytes(16)), ...Array.from({ length: 10_000 }, (_, i) => seqId(i))];
    for (const id of ids) f.add(id);
    for (const id of ids) expect(f.mayContain(id)).toBe(true);
    // an id is not counted only if it looked present already (a false positive): rare
    expect(f.added).toBeGreaterThan(ids.length * 0.99);
  });

  it('keeps false positives near the design rate (under 2%) at capacity, also for ids differing in one byte', () => {
    const f = BloomFilter.forCapacity(50_000);
    for (let i = 0; i < f.capacity; i++) f.add(seqId(i));
    let fp = 0;
    const probes = 100_000;
    for (let i = 0; i < probes; i++) if (f.mayContain(seqId(10_000_000 + i))) fp++;
    expect(fp / probes).toBeLessThan(0.02);
  });

  it('counts an id once however often it is added', () => {
    const f = BloomFilter.forCapacity(1000);
    const id = randomBytes(16);
    f.add(id);
    f.add(id);
    expect(f.added).toBe(1);
  });

  it('round-trips through serialize, and refuses damaged bytes', () => {
    const f = BloomFilter.forCapacity(5000);
    const ids = Array.from({ length: 3000 }, () => randomBytes(16));
    for (const id of ids) f.add(id);
    const bytes = f.serialize();
    const g = BloomFilter.deserialize(bytes)!;
    expect(g).toBeDefined();
    expect(g.added).toBe(f.added);
    expect(g.capacity).toBe(f.capacity);
    for (const id of ids) expect(g.mayContain(id)).toBe(true);
    const flipped = Buffer.from(bytes);
    flipped[flipped.length - 5] ^= 0x10;
    expect(BloomFilter.deserialize(flipped)).toBeUndefined();
    expect(BloomFilter.deserialize(bytes.subarray(0, bytes.length - 1))).toBeUndefined();
    expect(BloomFilter.deserialize(Buffer.from('not a filter at all'))).toBeUndefined();
  });

  it('grows by layers without forgetting an id, false positives staying under 4% with five layers', () => {
    const g = GrowingBloomFilter.forCapacity(1000);
    for (let i = 0; i < 30_000; i++) g.add(seqId(i));
    expect(g.layerCount).toBe(5); // 1638 + 3276 + 6553 + 13107 + ...
    for (let i = 0; i < 30_000; i++) expect(g.mayContain(seqId(i))).toBe(true);
    let fp = 0;
    for (let i = 0; i < 50_000; i++) if (g.mayContain(seqId(1_000_000 + i))) fp++;
    expect(fp / 50_000).toBeLessThan(0.04);
    const back = GrowingBloomFilter.deserialize(g.serialize())!;
    expect(back.layerCount).toBe(5);
    expect(back.added).toBe(g.added);
    for (let i = 0; i < 30_000; i += 7) expect(back.mayContain(seqId(i))).toBe(true);
    const damaged = g.serialize();
    damaged[damaged.length - 3] ^= 1; // in the last layer
    expect(GrowingBloomFilter.deserialize(damaged)).toBeUndefined();
    expect(GrowingBloomFilter.deserialize(Buffer.alloc(0))).toBeUndefined();
  });
});
