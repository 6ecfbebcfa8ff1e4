/**
 * Tasks run one at a time, each once the one before it has settled, in the
 * order given. A task's failure is its caller's to handle: the tasks after it
 * still run. Warren serialises four things this way: a queue index's file
 * I/O, the store's hint-file steps, a session's frames, and a vhost's
 * START/INIT/close.
 *
 * With `startIdleAtOnce`, a task given while nothing runs starts within the
 * caller's own call and, if it returns no promise, is done there: a session's
 * many synchronous frames then cost no turn of the event loop each. Without
 * it, a task always starts on a later microtask, after the caller's
 * synchronous code (a queue index relies on that: records buffered right
 * after asking for a write go out with it).
 */
export class SerialQueue {
  private tail: Promise<void> | null = null;
  private waiting = 0;

  constructor(private readonly startIdleAtOnce = false) {}

  run<T>(task: () => T | Promise<T>): Promise<T> {
    let p: Promise<T>;
    if (this.tail === null && this.startIdleAtOnce) {
      let r: T | Promise<T>;
      try {
        r = task();
      } catch (e) {
        return Promise.reject(e);
      }
      if (!(r instanceof Promise)) return Promise.resolve(r);
      p = r;
    } else {
      p = (this.tail ?? Promise.resolve()).then(task);
    }
    this.waiting++;
    const guard = p.then(
      () => {
        this.waiting--;
      },
      () => {
        this.waiting--;
      },
    );
    this.tail = guard;
    void guard.then(() => {
      if (this.tail === guard) this.tail = null;
    });
    return p;
  }

  /** Tasks given and not yet settled. */
  get pending(): number {
    return this.waiting;
  }

  /** Resolves once every task given before this call has settled. */
  idle(): Promise<void> {
    return this.tail ?? Promise.resolve();
  }
}

/** One SerialQueue per key, made on first use. */
export class KeyedSerialQueues {
  private readonly queues = new Map<string, SerialQueue>();

  run<T>(key: string, task: () => T | Promise<T>): Promise<T> {
    let q = this.queues.get(key);
    if (!q) this.queues.set(key, (q = new SerialQueue()));
    return q.run(task);
  }
}
