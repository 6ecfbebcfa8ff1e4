/**
 * A Bloom filter over 16-byte message ids: "certainly absent" or "maybe
 * present". The LevelDB index asks it before going to disk, so writing a new
 * message (whose id is almost never stored yet) costs no LevelDB read.
 *
 * 16 bits an id and 7 probes give about 0.07% false positives at capacity
 * (10 bits gave 0.8%: one new message in 120 cost a LevelDB read that held up
 * the store's mailbox). It cannot forget an id; the owner rebuilds it when it
 * fills. The probe count is part of the file format (a filter read back with
 * other probes would answer "absent" for ids it holds); the bits an id are not
 * (a filter's size is in its header).
 */
import { crc32c } from '../util/crc32c';

const BITS_PER_ID = 16;
const PROBES = 7;
const MAGIC = 0x57524246; // "WRBF"
const HEADER = 16; // magic, bit count (log2), added, crc32c of the bits

/** murmur3's 32-bit finalizer: every input bit affects every output bit. */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class BloomFilter {
  /** Ids added since the filter was made. */
  added = 0;

  private constructor(
    private readonly bits: Uint32Array,
    private readonly log2Bits: number,
  ) {}

  /** A filter sized for `capacity` ids (a power of two of bits, at least 2^10). */
  static forCapacity(capacity: number): BloomFilter {
    let log2 = 10;
    while (2 ** log2 < capacity * BITS_PER_ID && log2 < 36) log2++;
    return new BloomFilter(new Uint32Array(2 ** (log2 - 5)), log2);
  }

  /** Ids it holds before false positives pass the design rate. */
  get capacity(): number {
    return Math.floor(2 ** this.log2Bits / BITS_PER_ID);
  }

  get byteLength(): number {
    return this.bits.byteLength;
  }

  /** Adds an id; one it already seems to hold (every bit set) is not counted again. */
  add(id: Buffer): void {
    this.addHashed(hashes(id));
  }

  mayContain(id: Buffer): boolean {
    return this.mayContainHashed(hashes(id));
  }

  /** @internal */
  addHashed([h1, h2]: Hashes): void {
    const mask = 2 ** this.log2Bits - 1;
    let fresh = false;
    for (let i = 0; i < PROBES; i++) {
      const bit = h1 & mask;
      const w = bit >>> 5;
      const b = 1 << (bit & 31);
      if ((this.bits[w] & b) === 0) {
        this.bits[w] |= b;
        fresh = true;
      }
      h1 = (h1 + h2) >>> 0;
    }
    if (fresh) this.added++;
  }

  /** @internal */
  mayContainHashed([h1, h2]: Hashes): boolean {
    const mask = 2 ** this.log2Bits - 1;
    for (let i = 0; i < PROBES; i++) {
      const bit = h1 & mask;
      if ((this.bits[bit >>> 5] & (1 << (bit & 31))) === 0) return false;
      h1 = (h1 + h2) >>> 0;
    }
    return true;
  }

  /** The filter as bytes, with a checksum, for a clean shutdown. */
  serialize(): Buffer {
    const body = Buffer.from(this.bits.buffer, this.bits.byteOffset, this.bits.byteLength);
    const head = Buffer.alloc(HEADER);
    head.writeUInt32BE(MAGIC, 0);
    head.writeUInt32BE(this.log2Bits, 4);
    head.writeUInt32BE(this.added, 8);
    head.writeUInt32BE(crc32c(body), 12);
    return Buffer.concat([head, body]);
  }

  private static serializedLength(log2Bits: number): number {
    return HEADER + 2 ** (log2Bits - 3);
  }

  /** Bytes of the serialized filter at the start of `buf`, or 0 if it does not start with one. */
  static serializedLengthAt(buf: Buffer): number {
    if (buf.length < HEADER || buf.readUInt32BE(0) !== MAGIC) return 0;
    const log2 = buf.readUInt32BE(4);
    return log2 >= 10 && log2 <= 36 ? BloomFilter.serializedLength(log2) : 0;
  }

  /** The filter back from `serialize`, or undefined if the bytes are not one intact. */
  static deserialize(buf: Buffer): BloomFilter | undefined {
    if (buf.length < HEADER || buf.readUInt32BE(0) !== MAGIC) return undefined;
    const log2 = buf.readUInt32BE(4);
    if (log2 < 10 || log2 > 36 || buf.length !== BloomFilter.serializedLength(log2)) return undefined;
    const body = buf.subarray(HEADER);
    if (crc32c(body) !== buf.readUInt32BE(12)) return undefined;
    const bits = new Uint32Array(body.length / 4);
    Buffer.from(bits.buffer).set(body);
    const f = new BloomFilter(bits, log2);
    f.added = buf.readUInt32BE(8);
    return f;
  }
}

type Hashes = [number, number];

/** Two independent 32-bit hashes of a 16-byte id (double hashing). */
function hashes(id: Buffer): Hashes {
  const a = id.readUInt32LE(0);
  const b = id.readUInt32LE(4);
  const c = id.readUInt32LE(8);
  const d = id.readUInt32LE(12);
  const h1 = fmix(a ^ fmix(b ^ fmix(c ^ fmix(d ^ 0x9747b28c))));
  // odd, so that the probe sequence visits distinct bits
  const h2 = (fmix(d ^ fmix(c ^ fmix(b ^ fmix(a ^ 0x5bd1e995)))) | 1) >>> 0;
  return [h1, h2];
}

/**
 * A Bloom filter that grows: when its newest layer is full, a layer twice its
 * size is added, so it never needs the ids again to grow. An id is "maybe
 * present" if any layer says so. Ids of deleted entries stay in it; its owner
 * rebuilds a fresh one when those outnumber the live ones or the layers pile
 * up (every full layer adds its ~0.8% of false positives).
 */
export class GrowingBloomFilter {
  private constructor(private readonly layers: BloomFilter[]) {}

  static forCapacity(capacity: number): GrowingBloomFilter {
    return new GrowingBloomFilter([BloomFilter.forCapacity(capacity)]);
  }

  /** Ids added (not counting those it already seemed to hold). */
  get added(): number {
    return this.layers.reduce((n, l) => n + l.added, 0);
  }

  get layerCount(): number {
    return this.layers.length;
  }

  get byteLength(): number {
    return this.layers.reduce((n, l) => n + l.byteLength, 0);
  }

  add(id: Buffer): void {
    const h = hashes(id);
    if (this.layers.some((l) => l.mayContainHashed(h))) return;
    let last = this.layers[this.layers.length - 1];
    if (last.added >= last.capacity) {
      last = BloomFilter.forCapacity(2 * last.capacity);
      this.layers.push(last);
    }
    last.addHashed(h);
  }

  mayContain(id: Buffer): boolean {
    const h = hashes(id);
    return this.layers.some((l) => l.mayContainHashed(h));
  }

  serialize(): Buffer {
    return Buffer.concat(this.layers.map((l) => l.serialize()));
  }

  /** Back from `serialize`, or undefined unless every layer is intact. */
  static deserialize(buf: Buffer): GrowingBloomFilter | undefined {
    const layers: BloomFilter[] = [];
    for (let pos = 0; pos < buf.length; ) {
      const n = BloomFilter.serializedLengthAt(buf.subarray(pos));
      const layer = n > 0 ? BloomFilter.deserialize(buf.subarray(pos, pos + n)) : undefined;
      if (!layer) return undefined;
      layers.push(layer);
      pos += n;
    }
    return layers.length > 0 ? new GrowingBloomFilter(layers) : undefined;
  }
}
