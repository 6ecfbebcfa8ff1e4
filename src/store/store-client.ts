/** A client of the store (a queue), identified by its ref: the API a queue uses. */
import { MsgId } from '../index/types';
import { ClientTerminatedError } from './errors';

/** What a client asks of its store (MessageStore's @internal methods). */
export interface ClientPort {
  writeMessage(id: MsgId, body: Buffer): void;
  readMessage(id: MsgId): Promise<Buffer | undefined>;
  removeMessages(ids: MsgId[]): void;
  syncMessages(ids: MsgId[], to?: 'disk' | 'kernel'): Promise<void>;
  barrier(): Promise<void>;
  deleteClient(ref: string): void;
  assertOpen(): void;
}

export class StoreClient {
  private terminated = false;

  /** @internal */
  constructor(
    private readonly store: ClientPort,
    readonly ref: string,
  ) {}

  /** Stores a message (or adds a reference to it if the id is already stored). Never blocks. */
  write(id: MsgId, body: Buffer): void {
    this.check();
    this.store.writeMessage(id, body);
  }

  /** The body, or undefined if the store does not hold the message. Treat the Buffer as read-only. */
  read(id: MsgId): Promise<Buffer | undefined> {
    this.check();
    return this.store.readMessage(id);
  }

  /** Drops one reference to each message; at zero the record becomes garbage. */
  remove(ids: MsgId[]): void {
    this.check();
    this.store.removeMessages(ids);
  }

  /** Resolves once every listed message is durable on disk (ids no longer stored resolve too). */
  sync(ids: MsgId[]): Promise<void> {
    this.check();
    return this.store.syncMessages(ids);
  }

  /**
   * Resolves once every listed message has been handed to the kernel (it
   * survives the process, not the machine): durability `write`. The store's
   * own timer (`backgroundSyncMs`) fsyncs it later.
   */
  written(ids: MsgId[]): Promise<void> {
    this.check();
    return this.store.syncMessages(ids, 'kernel');
  }

  /** Ends this client; its ref stays recorded for the next clean start. */
  async terminate(): Promise<void> {
    if (this.terminated) return;
    this.store.assertOpen();
    this.terminated = true;
    await this.store.barrier();
  }

  /** Ends this client and forgets its ref (its queue is gone). */
  async deleteAndTerminate(): Promise<void> {
    if (this.terminated) return;
    this.store.assertOpen();
    this.terminated = true;
    this.store.deleteClient(this.ref);
    await this.store.barrier();
  }

  private check(): void {
    if (this.terminated) throw new ClientTerminatedError(this.ref);
  }
}
