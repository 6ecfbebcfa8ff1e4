import { DEFAULT_MAX_FRAME, FrameDecoder, ProtocolError, Reader, Writer, encodeFrame } from '../../src/sidecar/frames';
import { Op, decodeRequest, encodeConfirm, Push, writeEntries } from '../../src/sidecar/protocol';

const id = (n: number) => Buffer.alloc(16, n);

function publishPayload(reqId: number, n: number, blob = Buffer.from('hello')): Buffer {
  const w = new Writer().u8(Op.PUBLISH).u32(reqId).u32(7).u32(n);
  for (let i = 0; i < n; i++) w.u64(i).u8(3).u32(i).i64(-1).u32(blob.length).bytes(id(i)).u32(blob.length).bytes(blob);
  return w.finish();
}

describe('FrameDecoder', () => {
  it('splits frames arriving in arbitrary pieces', () => {
    const payloads = [Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(5000, 7), Buffer.from('xyz')];
    const stream = Buffer.concat(payloads.map(encodeFrame));
    for (const step of [1, 3, 4, 5, 1000, stream.length]) {
      const d = new FrameDecoder();
      const got: Buffer[] = [];
      for (let i = 0; i < stream.length; i += step) got.push(...d.push(stream.subarray(i, i + step)));
      expect(got.map((b) => b.toString('hex'))).toEqual(payloads.map((b) => b.toString('hex')));
      expect(d.pending).toBe(0);
    }
  });

  it('splits frames fed in random pieces, many at a time, with the same bytes as sent', () => {
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const payloads = Array.from({ length: 200 }, (_, i) => Buffer.alloc(rnd(3) === 0 ? rnd(100_000) : rnd(50), i));
    const stream = Buffer.concat(payloads.map(encodeFrame));
    const d = new FrameDecoder();
    const got: Buffer[] = [];
    for (let i = 0; i < stream.length; ) {
      // several chunks buffered before the frames are taken out
      for (let k = rnd(4) + 1; k > 0 && i < stream.length; k--) {
        const n = rnd(70_000) + 1;
        d.feed(stream.subarray(i, i + n));
        i += n;
      }
      for (let f = d.next(); f !== undefined; f = d.next()) got.push(f);
    }
    expect(got.length).toBe(payloads.length);
    got.forEach((g, i) => expect(g.equals(payloads[i])).toBe(true));
    expect(d.pending).toBe(0);
  });

  it('copies only a frame that spans chunks, into a buffer of its own size; the chunks after it are not copied', () => {
    const a = Buffer.alloc(70_000, 1);
    const b = Buffer.alloc(100, 2);
    const stream = Buffer.concat([encodeFrame(a), encodeFrame(b), encodeFrame(b)]);
    const chunks = [stream.subarray(0, 65_536), stream.subarray(65_536, 70_050), stream.subarray(70_050)];
    const d = new FrameDecoder();
    for (const c of chunks) d.feed(c);
    const [fa, fb1, fb2] = [d.next()!, d.next()!, d.next()!];
    expect(fa.equals(a) && fb1.equals(b) && fb2.equals(b)).toBe(true);
    // the spanning frame's own buffer, not one holding everything that was buffered
    expect(fa.buffer.byteLength).toBe(70_004);
    // the frames that lie in one chunk are views of it
    expect(fb2.buffer).toBe(chunks[2].buffer);
  });

  it('keeps an incomplete frame pending', () => {
    const d = new FrameDecoder();
    const f = encodeFrame(Buffer.from('hello'));
    expect(d.push(f.subarray(0, 6))).toEqual([]);
    expect(d.pending).toBe(6);
    expect(d.push(f.subarray(6)).map(String)).toEqual(['hello']);
  });

  it('rejects an oversized frame with a clear error', () => {
    const d = new FrameDecoder();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(DEFAULT_MAX_FRAME + 1);
    expect(() => d.push(head)).toThrow(ProtocolError);
    expect(() => new FrameDecoder().push(head)).toThrow(/exceeds/);
    expect(d.pending).toBe(0); // nothing of it is kept
  });

  it('applies a limit changed between frames to the frames after it (pre-authentication limit)', () => {
    const small = encodeFrame(Buffer.alloc(10, 1));
    const big = encodeFrame(Buffer.alloc(5000, 2));
    const d = new FrameDecoder(64);
    d.feed(Buffer.concat([small, big]));
    expect(d.next()?.length).toBe(10);
    expect(() => new FrameDecoder(64).push(Buffer.concat([small, big]))).toThrow(/5000 bytes exceeds the 64-byte limit/);
    d.limit = 1 << 20;
    expect(d.next()?.length).toBe(5000);
    expect(d.next()).toBeUndefined();
  });
});

describe('Reader and Writer', () => {
  it('round-trips every field type', () => {
    const big = Buffer.alloc(4000, 9);
    const b = new Writer(8).u8(255).u16(65535).u32(0xffffffff).u64(Number.MAX_SAFE_INTEGER).i64(-1).str('vhost/é').bytes(big).finish();
    const r = new Reader(b);
    expect([r.u8(), r.u16(), r.u32(), r.u64(), r.i64(), r.str()]).toEqual([255, 65535, 0xffffffff, Number.MAX_SAFE_INTEGER, -1, 'vhost/é']);
    expect(r.bytes(4000).equals(big)).toBe(true);
    r.end();
  });

  it('gives the payload in pieces, large buffers uncopied, the same bytes as finish()', () => {
    const big = Buffer.alloc(4000, 9);
    const w = new Writer(8).u32(7).bytes(big).u8(1).bytes(Buffer.from('small'));
    const { pieces, length } = w.pieces();
    expect(pieces).toContain(big); // the same buffer, not a copy
    expect(Buffer.concat(pieces)).toEqual(w.finish());
    expect(length).toBe(4 + 4000 + 1 + 5);
  });

  it('frames with a length prefix', () => {
    const f = new Writer().u32(1).finish(true);
    expect(f.readUInt32BE(0)).toBe(4);
    expect(f.length).toBe(8);
  });

  it('reports truncation and trailing bytes', () => {
    expect(() => new Reader(Buffer.alloc(3)).u32('handle')).toThrow(/truncated frame: handle needs 4 bytes/);
    const r = new Reader(Buffer.alloc(5));
    r.u32();
    expect(() => r.end()).toThrow(/1 trailing bytes/);
    const big = Buffer.alloc(8, 0xff);
    expect(() => new Reader(big).u64('seq')).toThrow(/out of range/);
  });
});

describe('decodeRequest', () => {
  it('decodes a publish batch', () => {
    const f = decodeRequest(publishPayload(0, 3));
    expect(f.reqId).toBe(0);
    expect(f.req.op).toBe(Op.PUBLISH);
    if (f.req.op !== Op.PUBLISH) throw new Error('unreachable');
    expect(f.req.handle).toBe(7);
    expect(f.req.publishes.map((p) => [p.seq, p.flags, p.deliveryCount, p.expiry, p.size, p.id[0], p.blob.toString()])).toEqual([
      [0, 3, 0, -1, 5, 0, 'hello'],
      [1, 3, 1, -1, 5, 1, 'hello'],
      [2, 3, 2, -1, 5, 2, 'hello'],
    ]);
  });

  it('decodes FAIL_DELIVERY, asynchronous like ACK', () => {
    const f = decodeRequest(new Writer().u8(Op.FAIL_DELIVERY).u32(0).u32(7).u32(2).u64(4).u64(9).finish());
    expect(f).toEqual({ reqId: 0, req: { op: Op.FAIL_DELIVERY, handle: 7, seqs: [4, 9] } });
  });

  it('encodes entries with their delivery count after the flags', () => {
    const b = writeEntries(new Writer(), [{ seq: 5, flags: 9, deliveryCount: 3, expiry: -1, size: 2, id: id(1), blob: Buffer.from('hi') }]).finish();
    const r = new Reader(b);
    expect([r.u32(), r.u64(), r.u8(), r.u32(), r.i64(), r.u32(), r.bytes(16)[0], r.bytes(r.u32()).toString()]).toEqual([1, 5, 9, 3, -1, 2, 1, 'hi']);
    r.end();
  });

  it('decodes START and INIT', () => {
    const key = 'a'.repeat(32);
    const legacy = 'b'.repeat(32);
    const start = decodeRequest(new Writer().u8(Op.START).u32(9).str('/').str('/var/x').u32(1).str(key).str(legacy).finish());
    expect(start).toEqual({ reqId: 9, req: { op: Op.START, vhost: '/', dir: '/var/x', keys: [key], legacyKeys: [legacy] } });
    const init = decodeRequest(new Writer().u8(Op.INIT).u32(10).str('/').str('/d').str(key).str('q1').u8(1).u8(2).finish());
    expect(init.req).toEqual({ op: Op.INIT, vhost: '/', dir: '/d', key, name: 'q1', durable: true, recover: 2 });
  });

  const bad: [string, Buffer, RegExp][] = [
    ['an empty frame', Buffer.alloc(0), /truncated frame: op/],
    ['an unknown op', new Writer().u8(77).u32(1).finish(), /unknown op 77/],
    ['a truncated publish', publishPayload(0, 2).subarray(0, 40), /truncated/],
    ['trailing bytes', Buffer.concat([new Writer().u8(Op.PURGE_ACKS).u32(0).u32(1).finish(), Buffer.from([0])]), /trailing/],
    ['a sync op without request id', new Writer().u8(Op.FETCH).u32(0).u32(1).u32(1).u8(1).u8(1).finish(), /needs a request id/],
    ['a bad boolean', new Writer().u8(Op.FETCH).u32(3).u32(1).u32(1).u8(1).u8(2).finish(), /must be 0 or 1/],
    ['a bad fetch mode', new Writer().u8(Op.FETCH).u32(3).u32(1).u32(1).u8(3).u8(1).finish(), /must be 0, 1 or 2/],
    ['a bad queue key', new Writer().u8(Op.DELETE_CRASHED).u32(3).str('/').str('/d').str('../etc').finish(), /not 32 lowercase hex/],
    ['a short token', new Writer().u8(Op.AUTH).u32(0).bytes(Buffer.alloc(31)).finish(), /token needs 32 bytes/],
    ['an absurd count', new Writer().u8(Op.ACK).u32(0).u32(1).u32(1_000_000).finish(), /does not fit/],
  ];
  it.each(bad)('rejects %s with a clear ProtocolError', (_what, payload, msg) => {
    expect(() => decodeRequest(payload)).toThrow(ProtocolError);
    expect(() => decodeRequest(payload)).toThrow(msg);
  });

  it('encodes confirms', () => {
    const f = encodeConfirm(5, [id(1), id(2)]);
    const d = new FrameDecoder().push(f)[0];
    const r = new Reader(d);
    expect([r.u8(), r.u32(), r.u32()]).toEqual([Push.CONFIRM, 5, 2]);
    expect(r.bytes(16).equals(id(1))).toBe(true);
    expect(r.bytes(16).equals(id(2))).toBe(true);
    r.end();
  });
});
