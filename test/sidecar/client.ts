/**
 * A client of the sidecar's socket, speaking as the Erlang plugin does, and
 * the requests the sidecar tests make with it.
 */
import * as crypto from 'crypto';
import * as net from 'net';
import { FrameDecoder, Reader, Writer } from '../../src/sidecar/frames';
import { Op, Push, TOKEN_BYTES } from '../../src/sidecar/protocol';

export const KEY = '0123456789abcdef0123456789abcdef';
export const TOKEN = crypto.randomBytes(TOKEN_BYTES);

export class Client {
  private decoder = new FrameDecoder();
  private nextReq = 1;
  private waiting = new Map<number, (r: { status: number; body: Buffer }) => void>();
  readonly confirms: Buffer[] = [];
  private confirmWaiters: (() => void)[] = [];
  readonly failures: { handle: number; message: string }[] = [];
  private failureWaiters: (() => void)[] = [];

  /** Resolves once a FAILED push for `handle` has arrived. */
  async failed(handle: number): Promise<string> {
    for (;;) {
      const f = this.failures.find((x) => x.handle === handle);
      if (f) return f.message;
      await new Promise<void>((r) => this.failureWaiters.push(r));
    }
  }
  closed: Promise<void>;

  constructor(readonly sock: net.Socket) {
    this.closed = new Promise((resolve) => sock.on('close', () => resolve()));
    sock.on('data', (chunk: Buffer) => {
      for (const f of this.decoder.push(chunk)) {
        const r = new Reader(f);
        const kind = r.u8();
        if (kind === Push.REPLY) {
          const req = r.u32();
          const status = r.u8();
          this.waiting.get(req)?.({ status, body: f.subarray(6) });
          this.waiting.delete(req);
        } else if (kind === Push.CONFIRM) {
          r.u32();
          const n = r.u32();
          for (let i = 0; i < n; i++) this.confirms.push(Buffer.from(r.bytes(16)));
          for (const w of this.confirmWaiters.splice(0)) w();
        } else if (kind === Push.FAILED) {
          this.failures.push({ handle: r.u32(), message: f.subarray(5).toString() });
          for (const w of this.failureWaiters.splice(0)) w();
        }
      }
    });
  }

  /** A connection that has presented `token` (the broker's, by default). */
  static async connect(p: string, token: Buffer | null = TOKEN): Promise<Client> {
    const c = await new Promise<Client>((resolve, reject) => {
      const s = net.connect(p, () => resolve(new Client(s)));
      s.once('error', reject);
    });
    if (token) await c.call(Op.AUTH, (w) => w.bytes(token));
    return c;
  }

  /** Resolves once `n` confirms have arrived on this connection. */
  async confirmed(n: number): Promise<void> {
    while (this.confirms.length < n) await new Promise<void>((r) => this.confirmWaiters.push(r));
  }

  cast(op: number, fill: (w: Writer) => void): void {
    const w = new Writer().u8(op).u32(0);
    fill(w);
    this.sock.write(w.finish(true));
  }

  call(op: number, fill: (w: Writer) => void): Promise<Reader> {
    const id = this.nextReq++;
    const w = new Writer().u8(op).u32(id);
    fill(w);
    this.sock.write(w.finish(true));
    return new Promise((resolve, reject) => {
      this.waiting.set(id, ({ status, body }) => (status === 0 ? resolve(new Reader(body)) : reject(new Error(body.toString()))));
    });
  }
}

/** START with `keys` in vhost directory `at`, each with the legacy key of the same index (or its own). */
export async function startVhost(c: Client, at: string, keys: string[], legacy: string[] = keys): Promise<number[]> {
  const r = await c.call(Op.START, (w) => {
    w.str('/').str(at).u32(keys.length);
    keys.forEach((k, i) => w.str(k).str(legacy[i]));
  });
  const n = r.u32();
  return Array.from({ length: n }, () => r.u8());
}

/** INIT of durable queue 'q' (key KEY) in vhost directory `at`. */
export async function initQueue(c: Client, at: string, recover: number) {
  const r = await c.call(Op.INIT, (w) => w.str('/').str(at).str(KEY).str('q').u8(1).u8(recover));
  return { handle: r.u32(), len: r.u32(), bytes: r.u64(), pcount: r.u32(), pbytes: r.u64(), nextSeq: r.u64(), expiring: r.u32() };
}

/** One publish of a PUBLISH frame: Seq, Flags, DeliveryCount, Expiry, Size, MsgId, BlobLen, Blob. */
export function writePublish(w: Writer, seq: number, flags: number, blob: Buffer, opts: { deliveryCount?: number; expiry?: number; id?: Buffer } = {}): Writer {
  return w
    .u64(seq)
    .u8(flags)
    .u32(opts.deliveryCount ?? 0)
    .i64(opts.expiry ?? -1)
    .u32(blob.length)
    .bytes(opts.id ?? Buffer.alloc(16, seq))
    .u32(blob.length)
    .bytes(blob);
}

/**
 * Publishes `seqs`; those in `expiring` carry a per-message expiry (an hour
 * from now), those in `counts` a delivery_count annotation.
 */
export function publish(c: Client, handle: number, seqs: number[], flags: number, expiring: number[] = [], counts: Record<number, number> = {}) {
  c.cast(Op.PUBLISH, (w) => {
    w.u32(handle).u32(seqs.length);
    for (const s of seqs) {
      writePublish(w, s, flags, Buffer.from(`body-${s}`), { deliveryCount: counts[s], expiry: expiring.includes(s) ? Date.now() + 3_600_000 : undefined });
    }
  });
}

/** An Entry of a FETCH, READ or FOLD reply (the body as text). */
export function readEntry(r: Reader) {
  const seq = r.u64();
  const flags = r.u8();
  const deliveryCount = r.u32();
  const expiry = r.i64();
  const size = r.u32();
  const id = Buffer.from(r.bytes(16));
  return { seq, flags, deliveryCount, expiry, size, id, body: r.bytes(r.u32()).toString() };
}

/** The N × Entry of a FETCH, READ or FOLD reply. */
export function readEntries(r: Reader) {
  return Array.from({ length: r.u32() }, () => readEntry(r));
}

export async function fetch(c: Client, handle: number, ack: boolean) {
  const r = await c.call(Op.FETCH, (w) => w.u32(handle).u32(1).u8(ack ? 1 : 0).u8(1));
  const [e] = readEntries(r);
  return e && { seq: e.seq, flags: e.flags, deliveryCount: e.deliveryCount, body: e.body };
}

