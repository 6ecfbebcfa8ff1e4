/**
 * Length-prefixed frames (Erlang's `{packet,4}`) and the byte readers/writers
 * the protocol is built from. See docs/PROTOCOL.md.
 */
import { readInt64BE, readUInt64BE, writeInt64BE, writeUInt64BE } from '../util/int64';

/**
 * Default frame limit after authentication: RabbitMQ's default
 * max_message_size (128 MiB) plus room for the message's properties. The
 * plugin passes its own (`--max-frame`, from the broker's max_message_size
 * and frame_max); a frame over the limit is refused before it is buffered.
 */
export const DEFAULT_MAX_FRAME = 128 * 1024 * 1024 + 256 * 1024;
/** Frame limits a sidecar accepts at all (`--max-frame`). */
export const MIN_MAX_FRAME = 1024 * 1024;
export const MAX_MAX_FRAME = 768 * 1024 * 1024;

export class ProtocolError extends Error {
  readonly code = 'EPROTOCOL';
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/**
 * Splits a byte stream into frame payloads. The limit is checked against each
 * frame's length header before its bytes are kept, and may change between
 * frames (a connection's first frame, before authentication, gets a small one).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(public limit: number = DEFAULT_MAX_FRAME) {}

  /** Feeds bytes; returns every complete payload. Throws ProtocolError on an oversized frame. */
  push(chunk: Buffer): Buffer[] {
    this.feed(chunk);
    const out: Buffer[] = [];
    for (let f = this.next(); f !== undefined; f = this.next()) out.push(f);
    return out;
  }

  /** Adds bytes without decoding them; `next()` takes the frames out one at a time. */
  feed(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next complete payload, or undefined. Throws ProtocolError when the next frame is over the limit. */
  next(): Buffer | undefined {
    if (this.buffered < 4) return undefined;
    const len = this.peek(4).readUInt32BE(0);
    if (len > this.limit) {
      this.chunks = [];
      this.buffered = 0;
      throw new ProtocolError(`frame of ${len} bytes exceeds the ${this.limit}-byte limit`);
    }
    if (this.buffered < 4 + len) return undefined;
    return this.take(4 + len).subarray(4);
  }

  /** Bytes held of an incomplete frame. */
  get pending(): number {
    return this.buffered;
  }

  /** The first n bytes (n <= buffered), without taking them: a copy of n bytes only if they span chunks. */
  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    return this.gather(n, false);
  }

  /**
   * Takes the next n bytes (n <= buffered): a view of the first chunk when
   * they lie in it, else one buffer of exactly n bytes. Only the frame's own
   * bytes are copied: the chunks after it stay as they are (concatenating
   * everything buffered made each body a view of a buffer many frames long,
   * kept alive by any one of them).
   */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    this.buffered -= n;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    return this.gather(n, true);
  }

  /** Copies the first n bytes out of the chunks; `consume`: and drops them. */
  private gather(n: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    let i = 0;
    while (at < n) {
      const c = this.chunks[i];
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (consume && k === c.length) i++;
      else if (consume) this.chunks[i] = c.subarray(k);
      else i++;
    }
    if (consume) this.chunks.splice(0, i);
    return out;
  }
}

export function encodeFrame(payload: Buffer): Buffer {
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(payload.length, 0);
  return Buffer.concat([head, payload]);
}

/** Reads big-endian fields; any read past the end is a ProtocolError. */
export class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number, what: string): void {
    if (this.pos + n > this.buf.length) {
      throw new ProtocolError(`truncated frame: ${what} needs ${n} bytes at offset ${this.pos}, frame has ${this.buf.length}`);
    }
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.buf.readUInt8(this.pos++);
  }

  u16(what = 'u16'): number {
    this.need(2, what);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(what = 'u64'): number {
    this.need(8, what);
    const v = readUInt64BE(this.buf, this.pos);
    if (v === undefined) throw new ProtocolError(`${what} ${this.buf.readBigUInt64BE(this.pos)} is out of range`);
    this.pos += 8;
    return v;
  }

  i64(what = 'i64'): number {
    this.need(8, what);
    const v = readInt64BE(this.buf, this.pos);
    if (v === undefined) throw new ProtocolError(`${what} ${this.buf.readBigInt64BE(this.pos)} is out of range`);
    this.pos += 8;
    return v;
  }

  bytes(n: number, what = 'bytes'): Buffer {
    this.need(n, what);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  str(what = 'string'): string {
    const n = this.u16(`${what} length`);
    return this.bytes(n, what).toString('utf8');
  }

  /** A count that must be plausible for the bytes left (each item ≥ minItemBytes). */
  count(minItemBytes: number, what = 'count'): number {
    const n = this.u32(what);
    if (n * minItemBytes > this.buf.length - this.pos) {
      throw new ProtocolError(`truncated frame: ${what} ${n} does not fit in the ${this.buf.length - this.pos} bytes left`);
    }
    return n;
  }

  end(): void {
    if (this.pos !== this.buf.length) {
      throw new ProtocolError(`${this.buf.length - this.pos} trailing bytes in frame`);
    }
  }
}

/** A payload in pieces, in order. */
export interface Payload {
  pieces: Buffer[];
  length: number;
}

/** Builds a payload from big-endian fields. */
export class Writer {
  private parts: Buffer[] = [];
  private cur: Buffer;
  private pos = 0;

  constructor(initial = 256) {
    this.cur = Buffer.allocUnsafe(initial);
  }

  private room(n: number): void {
    if (this.pos + n <= this.cur.length) return;
    this.parts.push(this.cur.subarray(0, this.pos));
    this.cur = Buffer.allocUnsafe(Math.max(n, this.cur.length * 2));
    this.pos = 0;
  }

  u8(v: number): this {
    this.room(1);
    this.cur.writeUInt8(v, this.pos++);
    return this;
  }

  u16(v: number): this {
    this.room(2);
    this.cur.writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.room(4);
    this.cur.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  u64(v: number): this {
    this.room(8);
    writeUInt64BE(this.cur, v, this.pos);
    this.pos += 8;
    return this;
  }

  i64(v: number): this {
    this.room(8);
    writeInt64BE(this.cur, v, this.pos);
    this.pos += 8;
    return this;
  }

  /** Appends a buffer without copying it when it is large. */
  bytes(b: Buffer): this {
    if (b.length > 1024) {
      this.parts.push(this.cur.subarray(0, this.pos));
      this.parts.push(b);
      this.cur = this.cur.subarray(this.pos);
      this.pos = 0;
      return this;
    }
    this.room(b.length);
    b.copy(this.cur, this.pos);
    this.pos += b.length;
    return this;
  }

  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 0xffff) throw new ProtocolError(`string of ${b.length} bytes is too long`);
    return this.u16(b.length).bytes(b);
  }

  /** The payload as the buffers it was built in, large ones appended by `bytes` uncopied: for a write that gathers them. */
  pieces(): Payload {
    const pieces = [...this.parts, this.cur.subarray(0, this.pos)].filter((b) => b.length > 0);
    return { pieces, length: pieces.reduce((n, b) => n + b.length, 0) };
  }

  /** The payload, with a 4-byte length prefix when `framed`. */
  finish(framed = false): Buffer {
    const body = [...this.parts, this.cur.subarray(0, this.pos)];
    const len = body.reduce((n, b) => n + b.length, 0);
    if (!framed) return Buffer.concat(body, len);
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(len, 0);
    return Buffer.concat([head, ...body], len + 4);
  }
}
