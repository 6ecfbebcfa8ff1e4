/**
 * What every bench suite shares: each case runs in a child process of its own
 * (so memory figures are not mixed), prints one JSON line, and the parent
 * collects the lines into bench/results/<suite>.json.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** In a child (`--child ...`): runs the case and exits non-zero on failure. Returns whether this is a child. */
export function runIfChild(args: string[], run: (childArgs: string[]) => Promise<void>): boolean {
  if (args[0] !== '--child') return false;
  void run(args.slice(1)).catch((e: Error) => {
    process.stderr.write(`${e.stack ?? e.message}\n`);
    process.exit(1);
  });
  return true;
}

export function numberOption(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
}

/** Runs `script --child <args>` once per entry, echoing and saving the JSON lines after a meta line. */
export function runChildren(suite: string, script: string, nodeArgs: string[], children: string[][], note: string): void {
  const meta = { bench: 'meta', date: new Date().toISOString(), cpus: os.cpus().length, memGB: Math.round(os.totalmem() / 2 ** 30), node: process.version, note };
  const lines = [JSON.stringify(meta)];
  process.stdout.write(lines[0] + '\n');
  for (const childArgs of children) {
    const line = execFileSync(process.execPath, [...nodeArgs, script, '--child', ...childArgs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    process.stdout.write(line + '\n');
    lines.push(line);
  }
  const out = path.resolve(__dirname, `../../bench/results/${suite}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, lines.join('\n') + '\n');
  process.stdout.write(`written to ${path.relative(process.cwd(), out)}\n`);
}
