/**
 * Group commit: every pending `sync` waiter is served by one fsync, issued at
 * most `intervalMs` after the first waiter arrived, or at once when `maxBatch`
 * waiters have gathered. A waiter is only released by an fsync that started
 * after it was registered, so it covers everything appended before it.
 */
export class SyncBatcher {
  private waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private timer: NodeJS.Timeout | undefined;
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
      else if (!this.timer && !this.running) this.timer = setTimeout(() => this.kick(), this.intervalMs);
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
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w.reject(err);
  }

  private kick(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running) {
      this.rerun = true;
      return;
    }
    this.run().catch(() => undefined);
  }

  private run(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
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
      if (this.rerun || this.waiters.length >= this.maxBatch) {
        this.rerun = false;
        this.kick();
      } else if (this.waiters.length > 0 && !this.timer) {
        this.timer = setTimeout(() => this.kick(), this.intervalMs);
      }
    };
    p.then(after, after);
    return p;
  }
}
