/**
 * The requests and replies of docs/PROTOCOL.md, decoded into typed values.
 */
import { FetchMode } from '../queue/messages';
import { Payload, ProtocolError, Reader, Writer } from './frames';

export const Op = {
  START: 1,
  INIT: 2,
  TERMINATE: 3,
  DELETE_AND_TERMINATE: 4,
  DELETE_CRASHED: 5,
  PURGE: 6,
  PURGE_ACKS: 7,
  PUBLISH: 8,
  FETCH: 9,
  ACK: 10,
  REQUEUE: 11,
  PEEK: 12,
  READ: 13,
  FOLD: 14,
  SYNC: 15,
  SHUTDOWN: 16,
  STATS: 17,
  DELIVER: 18,
  RELEASE: 19,
  AUTH: 20,
  FAIL_DELIVERY: 21,
} as const;

/** AUTH's token: random bytes the plugin hands the sidecar on its stdin at each start. */
export const TOKEN_BYTES = 32;

export const Push = { REPLY: 100, CONFIRM: 101, FAILED: 102 } as const;

// Message flags and FETCH's AckRequired byte are the queue's own vocabulary.
export { FetchMode, Flags } from '../queue/messages';

export const ID_BYTES = 16;

export enum RecoverMode {
  New = 0,
  Terms = 1,
  NonClean = 2,
}

// A publish as decoded, and a message as returned to Erlang, are the queue's own shapes.
export type { PublishInput as Publish, MessageOut as Entry } from '../queue/messages';
import type { MessageOut as Entry, PublishInput as Publish } from '../queue/messages';

export type Request =
  | { op: typeof Op.START; vhost: string; dir: string; keys: string[]; legacyKeys: string[] }
  | { op: typeof Op.INIT; vhost: string; dir: string; key: string; name: string; durable: boolean; recover: RecoverMode }
  | { op: typeof Op.TERMINATE | typeof Op.DELETE_AND_TERMINATE | typeof Op.PURGE | typeof Op.PURGE_ACKS | typeof Op.SYNC; handle: number }
  | { op: typeof Op.DELETE_CRASHED; vhost: string; dir: string; key: string }
  | { op: typeof Op.PUBLISH; handle: number; publishes: Publish[] }
  | { op: typeof Op.FETCH; handle: number; max: number; mode: FetchMode; withBody: boolean }
  | { op: typeof Op.ACK | typeof Op.REQUEUE | typeof Op.READ | typeof Op.DELIVER | typeof Op.RELEASE | typeof Op.FAIL_DELIVERY; handle: number; seqs: number[] }
  | { op: typeof Op.PEEK; handle: number; max: number }
  | { op: typeof Op.FOLD; handle: number; afterSeq: number; max: number }
  | { op: typeof Op.SHUTDOWN | typeof Op.STATS }
  | { op: typeof Op.AUTH; token: Buffer };

export interface Frame {
  reqId: number;
  req: Request;
}

const SYNC_ONLY = new Set<number>([Op.START, Op.INIT, Op.TERMINATE, Op.DELETE_AND_TERMINATE, Op.DELETE_CRASHED, Op.PURGE, Op.FETCH, Op.PEEK, Op.READ, Op.FOLD, Op.SHUTDOWN, Op.STATS]);

function seqs(r: Reader): number[] {
  const n = r.count(8, 'seq count');
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = r.u64('seq');
  return out;
}

function bool(r: Reader, what: string): boolean {
  const v = r.u8(what);
  if (v > 1) throw new ProtocolError(`${what} must be 0 or 1, got ${v}`);
  return v === 1;
}

/** Decodes one request payload. Throws ProtocolError for anything malformed. */
export function decodeRequest(payload: Buffer): Frame {
  const r = new Reader(payload);
  const op = r.u8('op');
  const reqId = r.u32('request id');
  let req: Request;
  switch (op) {
    case Op.START: {
      const vhost = r.str('vhost');
      const dir = r.str('dir');
      const n = r.count(4, 'queue count');
      const keys: string[] = [];
      const legacyKeys: string[] = [];
      for (let i = 0; i < n; i++) {
        keys.push(checkKey(r.str('queue key')));
        legacyKeys.push(checkKey(r.str('legacy queue key')));
      }
      req = { op, vhost, dir, keys, legacyKeys };
      break;
    }
    case Op.INIT: {
      const vhost = r.str('vhost');
      const dir = r.str('dir');
      const key = checkKey(r.str('queue key'));
      const name = r.str('queue name');
      const durable = bool(r, 'durable');
      const recover = r.u8('recover');
      if (recover > 2) throw new ProtocolError(`recover mode ${recover} is unknown`);
      req = { op, vhost, dir, key, name, durable, recover };
      break;
    }
    case Op.TERMINATE:
    case Op.DELETE_AND_TERMINATE:
    case Op.PURGE:
    case Op.PURGE_ACKS:
    case Op.SYNC:
      req = { op, handle: r.u32('handle') };
      break;
    case Op.DELETE_CRASHED:
      req = { op, vhost: r.str('vhost'), dir: r.str('dir'), key: checkKey(r.str('queue key')) };
      break;
    case Op.PUBLISH: {
      const handle = r.u32('handle');
      const n = r.count(8 + 1 + 4 + 8 + 4 + ID_BYTES + 4, 'publish count');
      const publishes: Publish[] = [];
      for (let i = 0; i < n; i++) {
        const seq = r.u64('seq');
        const flags = r.u8('flags');
        const deliveryCount = r.u32('delivery count');
        const expiry = r.i64('expiry');
        const size = r.u32('size');
        const id = Buffer.from(r.bytes(ID_BYTES, 'message id'));
        const blob = r.bytes(r.u32('blob length'), 'blob');
        publishes.push({ seq, flags, deliveryCount, expiry, size, id, blob });
      }
      req = { op, handle, publishes };
      break;
    }
    case Op.FETCH: {
      const handle = r.u32('handle');
      const max = r.u32('max');
      const mode = r.u8('ack required');
      if (mode > 2) throw new ProtocolError(`ack required must be 0, 1 or 2, got ${mode}`);
      req = { op, handle, max, mode, withBody: bool(r, 'with body') };
      break;
    }
    case Op.ACK:
    case Op.REQUEUE:
    case Op.READ:
    case Op.DELIVER:
    case Op.RELEASE:
    case Op.FAIL_DELIVERY:
      req = { op, handle: r.u32('handle'), seqs: seqs(r) };
      break;
    case Op.PEEK:
      req = { op, handle: r.u32('handle'), max: r.u32('max') };
      break;
    case Op.FOLD:
      req = { op, handle: r.u32('handle'), afterSeq: r.i64('after seq'), max: r.u32('max') };
      break;
    case Op.SHUTDOWN:
    case Op.STATS:
      req = { op };
      break;
    case Op.AUTH:
      req = { op, token: Buffer.from(r.bytes(TOKEN_BYTES, 'token')) };
      break;
    default:
      throw new ProtocolError(`unknown op ${op}`);
  }
  r.end();
  if (reqId === 0 && SYNC_ONLY.has(op)) throw new ProtocolError(`op ${op} is synchronous and needs a request id`);
  return { reqId, req };
}

function checkKey(key: string): string {
  if (!/^[0-9a-f]{32}$/.test(key)) throw new ProtocolError(`queue key ${JSON.stringify(key)} is not 32 lowercase hex digits`);
  return key;
}

/** A REPLY frame as buffers to write in order: its 10-byte head, then the body's own buffers, none copied. */
export function encodeReply(reqId: number, body: Buffer | Payload): Buffer[] {
  const b = Buffer.isBuffer(body) ? { pieces: body.length ? [body] : [], length: body.length } : body;
  const head = Buffer.allocUnsafe(10);
  head.writeUInt32BE(6 + b.length, 0);
  head.writeUInt8(Push.REPLY, 4);
  head.writeUInt32BE(reqId, 5);
  head.writeUInt8(0, 9);
  return [head, ...b.pieces];
}

export function encodeError(reqId: number, message: string): Buffer {
  return new Writer(64).u8(Push.REPLY).u32(reqId).u8(1).bytes(Buffer.from(message, 'utf8')).finish(true);
}

export function encodeConfirm(handle: number, ids: readonly Buffer[]): Buffer {
  const w = new Writer(16 + ids.length * ID_BYTES).u8(Push.CONFIRM).u32(handle).u32(ids.length);
  for (const id of ids) w.bytes(id);
  return w.finish(true);
}

/** A queue failed for good in the sidecar (its journal or the store could not write): the plugin ends its process. */
export function encodeFailed(handle: number, message: string): Buffer {
  return new Writer(64).u8(Push.FAILED).u32(handle).bytes(Buffer.from(message, 'utf8')).finish(true);
}

export function writeEntries(w: Writer, entries: readonly Entry[]): Writer {
  w.u32(entries.length);
  for (const e of entries) {
    w.u64(e.seq).u8(e.flags).u32(e.deliveryCount).i64(e.expiry).u32(e.size).bytes(e.id);
    if (e.blob) w.u32(e.blob.length).bytes(e.blob);
    else w.u32(0);
  }
  return w;
}
