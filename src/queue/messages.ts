/**
 * What a backing queue holds and hands out: the protocol's message flags and
 * fetch modes, a message as published, as kept, and as returned, the queue's
 * figures, and the part of the message store a queue uses.
 */
import { JournalEntry } from './journal-codec';

export const Flags = { PERSISTENT: 1, NEEDS_CONFIRMING: 2, DELIVERED: 4, UNACKED: 8 } as const;

/** How fetch takes messages (the protocol's AckRequired byte). */
export enum FetchMode {
  NoAck = 0,
  Ack = 1,
  Reserve = 2,
}

/** The part of a message-store client (src/store's StoreClient) a queue uses for its bodies. */
export interface BodyStore {
  write(id: Buffer, body: Buffer): void;
  read(id: Buffer): Promise<Buffer | undefined>;
  remove(ids: Buffer[]): void;
  sync(ids: Buffer[]): Promise<void>;
  /** Resolves once the messages reached the kernel (durability `write`). */
  written(ids: Buffer[]): Promise<void>;
  terminate(): Promise<void>;
  deleteAndTerminate(): Promise<void>;
}

/** What the broker and the queue say of a message, both ways. */
interface MessageHeader {
  seq: number;
  flags: number;
  /** The delivery_count annotation: as it arrived on publish; on the way out, deliveries that failed (see BackingQueue.countOf). 0 for none. */
  deliveryCount: number;
  expiry: number;
  size: number;
  id: Buffer;
}

/** A message as published. */
export interface PublishInput extends MessageHeader {
  blob: Buffer;
}

/** A message as handed back to the broker (the body only when asked for). */
export interface MessageOut extends MessageHeader {
  blob?: Buffer;
}

/** A message as the queue keeps it in memory: what its journal record says (flags: PERSISTENT only when stored durably), and its body or where that went. */
export interface Message extends JournalEntry {
  /** Body of a message kept in memory (not stored durably). */
  body?: Buffer;
  /** A transient message whose body was paged out to the transient store. */
  paged?: boolean;
}

export interface QueueFigures {
  len: number;
  readyBytes: number;
  /** Ready messages with an expiry: while there are none the broker needs no TTL checks. */
  readyExpiring: number;
  unacked: number;
  unackedBytes: number;
  persistentCount: number;
  persistentBytes: number;
  nextSeq: number;
}

export class BackingQueueError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'BackingQueueError';
    this.code = code;
  }
}

/** Whether the message's body is in the message store (and its life in the queue index). */
export function isStored(m: Message): boolean {
  return (m.flags & Flags.PERSISTENT) !== 0;
}

/** A message read back from the queue index: stored, ready, confirmed. */
export function fromEntry(e: JournalEntry): Message {
  return { seq: e.seq, id: e.id, flags: (e.flags | Flags.PERSISTENT) & ~(Flags.UNACKED | Flags.NEEDS_CONFIRMING), expiry: e.expiry, size: e.size };
}
