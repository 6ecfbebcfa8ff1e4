/**
 * Finding this checkout from the code that runs (src/cli under ts-jest,
 * dist/cli when built): the launcher needs its plugin.json, build/ and
 * scripts/ wherever it was compiled to.
 */
import * as fs from 'fs';
import * as path from 'path';
import { BrokerError } from './broker-error';

/** The nearest directory at or above `from` for which `has` holds, or undefined. */
export function dirAbove(from: string, has: (dir: string) => boolean): string | undefined {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (has(dir)) return dir;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** The repository root: the nearest directory above this file with plugin.json. */
export function repoRoot(from: string = __dirname): string {
  const dir = dirAbove(from, (d) => fs.existsSync(path.join(d, 'plugin.json')) && fs.existsSync(path.join(d, 'package.json')));
  if (dir === undefined) throw new BrokerError(`no plugin.json above ${from}`, 'EBUILD');
  return dir;
}
