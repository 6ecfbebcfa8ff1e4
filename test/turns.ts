import { turnBudget } from '../src/util/turn-budget';

/** Counts the event loop's check phases while it runs: work that saw the count move went on over several turns. */
export function turnCounter(): { now: () => number; stop: () => void } {
  let turns = 0;
  let stopped = false;
  const tick = (): void => {
    turns++;
    if (!stopped) setImmediate(tick);
  };
  setImmediate(tick);
  return { now: () => turns, stop: () => (stopped = true) };
}

/** Sets the sidecar's turn budget (src/util/turn-budget.ts) to `ms` for each test of the enclosing block. */
export function turnBudgetEach(ms: number): void {
  let saved = 0;
  beforeEach(() => {
    saved = turnBudget.ms;
    turnBudget.ms = ms;
  });
  afterEach(() => {
    turnBudget.ms = saved;
  });
}
