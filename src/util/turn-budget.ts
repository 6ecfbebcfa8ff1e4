/**
 * How much of one event-loop turn a stretch of the sidecar's work may take
 * before the rest waits for the next turn. Every queue of the sidecar shares
 * its one thread: a burst of frames from the socket, a purge's removes or a
 * long store mailbox, done in one go, delays everyone's timers, fsync
 * completions and confirms by as long (the broker bench's "stall" figure).
 * Work that can be cut — the frames of a connection, the store's mailbox, the
 * ids of a remove — asks `spent()` as it goes and, once it is, goes on after
 * `nextTurn()`: what was waiting (timers, I/O completions) runs in between.
 *
 * A turn starts at the first `spent()` after the previous one ended; it ends
 * at the next check phase (a setImmediate made at its start), so work resumed
 * by `nextTurn()` gets a budget of its own.
 */
import { performance } from 'perf_hooks';

export class TurnBudget {
  private start = -1;
  private readonly endTurn = (): void => {
    this.start = -1;
  };

  /** `ms`: the share of a turn; 0 makes every `spent()` after a turn's first one true (tests). */
  constructor(public ms: number) {}

  /** Whether this turn's share is used up; the first call of a turn starts it and is never. */
  spent(): boolean {
    const now = performance.now();
    if (this.start < 0) {
      this.start = now;
      setImmediate(this.endTurn);
      return false;
    }
    return now - this.start >= this.ms;
  }
}

/**
 * The sidecar's one budget, shared by everything that runs on its thread.
 * 4 ms: a turn cut in its poll phase goes on in the same turn's check phase
 * with a budget of its own, so a turn holds ~2 × 4 ms of cut work plus what
 * cannot be cut (a GC, one frame's or one operation's own work).
 */
export const turnBudget = new TurnBudget(4);

/** Resolves in the next check phase, after the I/O and timers that were waiting. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
