/**
 * `npm run bench -- profile <file.cpuprofile | dir>... [--top 25]`: where a
 * sidecar's main thread spent its time, from the .cpuprofile files that
 * `-- broker --profile` keeps (V8's format: a call tree and, per sample, the
 * node it landed in and the time since the previous sample).
 *
 * Per profile: the share of self time of each function (name, file, line),
 * the top N, and the split V8 itself reports: (idle) is the thread waiting
 * for work, (garbage collector) is GC, (program) is native code outside any
 * JS frame. Written to stdout and to <file>.summary.json beside each profile.
 */
import * as fs from 'fs';
import * as path from 'path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  file: string;
  /** Wall time the profile covers, ms. */
  durationMs: number;
  /** Shares of the sampled time, percent. */
  idlePct: number;
  gcPct: number;
  programPct: number;
  top: Array<{ pct: number; fn: string; where: string }>;
}

export function summarize(file: string, top: number): ProfileSummary {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const frames = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, { fn: string; where: string; us: number }>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const us = p.timeDeltas[i] ?? 0;
    const cf = frames.get(p.samples[i]);
    if (!cf) continue;
    const where = cf.url ? `${cf.url.replace(/^file:\/\//, '').split('/').slice(-2).join('/')}:${cf.lineNumber + 1}` : '';
    const key = `${cf.functionName}\u0000${where}`;
    const e = self.get(key) ?? { fn: cf.functionName || '(anonymous)', where, us: 0 };
    e.us += us;
    self.set(key, e);
    total += us;
  }
  const pct = (us: number): number => Math.round((1000 * us) / Math.max(1, total)) / 10;
  const named = (n: string): number => [...self.values()].filter((e) => e.fn === n).reduce((s, e) => s + e.us, 0);
  return {
    file,
    durationMs: Math.round((p.endTime - p.startTime) / 1000),
    idlePct: pct(named('(idle)')),
    gcPct: pct(named('(garbage collector)')),
    programPct: pct(named('(program)')),
    top: [...self.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({ pct: pct(e.us), fn: e.fn, where: e.where })),
  };
}

function profilesIn(arg: string): string[] {
  if (!fs.statSync(arg).isDirectory()) return [arg];
  return fs.readdirSync(arg, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => path.join(arg, f))
    .sort();
}

function main(): void {
  const args = process.argv.slice(2);
  const t = args.indexOf('--top');
  const top = t >= 0 ? Number(args.splice(t, 2)[1]) : 25;
  if (!Number.isInteger(top) || top < 1) throw new Error('--top takes a positive integer');
  const files = args.flatMap(profilesIn);
  if (files.length === 0) throw new Error('usage: npm run bench -- profile <file.cpuprofile | dir>... [--top 25]');
  for (const f of files) {
    const s = summarize(f, top);
    fs.writeFileSync(`${f}.summary.json`, JSON.stringify(s, null, 2) + '\n');
    process.stdout.write(`\n${f} (${s.durationMs} ms): idle ${s.idlePct}%, GC ${s.gcPct}%, native outside JS ${s.programPct}%\n`);
    for (const e of s.top) process.stdout.write(`${e.pct.toFixed(1).padStart(6)}%  ${e.fn}  ${e.where}\n`);
  }
}

main();
