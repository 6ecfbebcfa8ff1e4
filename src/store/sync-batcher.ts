/**
 * Group commit: every pending `sync` waiter is served by one fsync. A waiter
 * is only released by an fsync that started after it was registered, so it
 * covers everything appended before it.
 *
 * With `intervalMs` 0 (the default) the batch is led by its first waiter:
 * when no fsync is running, one starts as soon as the current event-loop turn
 * has posted its waiters (setImmediate); waiters arriving while it runs ride
 * the next one, which starts the moment it ends. Under load a batch is what
 * arrived during one fsync, so no confirm waits on a timer and an idle
 * queue's confirm costs one fsync. With `intervalMs` > 0 the first waiter
 * waits that long for company (fewer fsyncs, later confirms). Either way an
 * fsync starts at once when `maxBatch` waiters have gathered.
 */
import { Timer, after } from '../util/timer';

export class SyncBatcher {
  private waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private rerun = false;
  syncs = 0;

  constructor(
    private readonly doSync: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly maxBatch: number,
  ) {}

  /** Resolves after the next fsync. */
  wait(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (this.waiters.length >= this.maxBatch) this.kick();
      else if (!this.timer && !this.running) this.arm();
    });
  }

  get pending(): number {
    return this.waiters.length;
  }

  /** fsync now (whether or not anyone waits) and release every waiter. */
  async syncNow(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
    await this.run();
  }

  /** Rejects every waiter (the store has failed or is going away without syncing). */
  failAll(err: unknown): void {
    this.disarm();
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w.reject(err);
  }

  /** The next fsync: after this turn (interval 0) or after the interval. */
  private arm(): void {
    this.timer = after(this.intervalMs, () => this.kick());
  }

  private disarm(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  private kick(): void {
    this.disarm();
    if (this.running) {
      this.rerun = true;
      return;
    }
    this.run().catch(() => undefined);
  }

  private run(): Promise<void> {
    this.disarm();
    const ws = this.waiters;
    this.waiters = [];
    const p = (async () => {
      try {
        await this.doSync();
        this.syncs++;
      } catch (e) {
        for (const w of ws) w.reject(e);
        throw e;
      }
      for (const w of ws) w.resolve();
    })();
    this.running = p;
    const after = (): void => {
      if (this.running === p) this.running = undefined;
      if (this.rerun || this.waiters.length >= this.maxBatch || (this.intervalMs === 0 && this.waiters.length > 0)) {
        // led by the waiters that came during the fsync just ended: they go at once
        this.rerun = false;
        this.kick();
      } else if (this.waiters.length > 0 && !this.timer) {
        this.arm();
      }
    };
    p.then(after, after);
    return p;
  }
}
