/** A cancellable callback: after the current event-loop turn (0 ms, setImmediate) or after `ms` (setTimeout). */
export interface Timer {
  cancel(): void;
}

export function after(ms: number, f: () => void): Timer {
  if (ms === 0) {
    const t = setImmediate(f);
    return { cancel: () => clearImmediate(t) };
  }
  const t = setTimeout(f, ms);
  return { cancel: () => clearTimeout(t) };
}
