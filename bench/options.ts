/** The command-line options of a bench suite: `--name value`. */
const args = process.argv.slice(2);

/** The value given after `--name`, if any. */
export function option(name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

/** `--name` as a positive number (`integer`: a whole one), else `dflt`; throws naming the option. */
export function positiveOption(name: string, dflt: number, integer = false): number {
  const v = option(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(v)}`);
  return n;
}
