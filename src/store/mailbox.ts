/**
 * The store's mailbox, as the reference's gen_server2 message queue: the
 * operations posted are applied one at a time, in the order posted, so a
 * contains never overtakes a preceding remove. A compaction's outcome goes to
 * the front (the reference's prioritised cast), so that no operation behind
 * it sees the files as they were before it. `apply` handles its own failures.
 *
 * `apply` returns a promise only for an operation that must wait (a disk read
 * of the index, a file roll); the others are applied back to back, with no
 * turn of the microtask queue each, until the turn's budget is spent: the
 * rest waits for the next turn (turn-budget.ts). Nothing is applied inside
 * `post`: the pump starts in a microtask.
 */
import { TurnBudget, nextTurn, turnBudget } from '../util/turn-budget';

export class Mailbox<Op> {
  private readonly queue: Op[] = [];
  private head = 0;
  private pumping = false;
  private idleWaiters: Array<() => void> = [];

  /** `stopped`: checked before each operation; once true, nothing more is applied (a crash). */
  constructor(
    private readonly apply: (op: Op) => Promise<void> | void,
    private readonly stopped: () => boolean,
    private readonly budget: TurnBudget = turnBudget,
  ) {}

  post(op: Op, front = false): void {
    if (front) {
      if (this.head > 0) this.queue[--this.head] = op;
      else this.queue.unshift(op);
    } else this.queue.push(op);
    if (!this.pumping) {
      this.pumping = true;
      queueMicrotask(() => void this.pump());
    }
  }

  /** Operations posted and not yet taken. */
  get pending(): number {
    return this.queue.length - this.head;
  }

  /** Whether nothing waits and nothing is being applied. */
  get idle(): boolean {
    return !this.pumping && this.head >= this.queue.length;
  }

  /** Resolves once the mailbox has been worked through (at once if it is idle). */
  drain(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Takes the operations right at the front while `match` holds, at most `max` (to apply them with the one being applied). */
  takeWhile<T extends Op>(match: (op: Op) => op is T, max: number): T[] {
    const taken: T[] = [];
    while (taken.length < max && this.head < this.queue.length) {
      const next = this.queue[this.head];
      if (!match(next)) break;
      taken.push(next);
      this.shift();
    }
    return taken;
  }

  /** The operations not yet taken (a crash rejects them). */
  *waiting(): IterableIterator<Op> {
    for (let i = this.head; i < this.queue.length; i++) yield this.queue[i];
  }

  private async pump(): Promise<void> {
    try {
      while (this.head < this.queue.length && !this.stopped()) {
        if (this.budget.spent()) {
          await nextTurn();
          continue;
        }
        const pending = this.apply(this.shift());
        if (pending) await pending;
      }
    } finally {
      this.pumping = false;
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of ws) w();
    }
  }

  private shift(): Op {
    const op = this.queue[this.head];
    this.queue[this.head++] = undefined as unknown as Op;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return op;
  }
}
