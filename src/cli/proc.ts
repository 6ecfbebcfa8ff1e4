/**
 * What Linux says about local processes and users (/proc, /etc/passwd): the
 * launcher finds a node's VM, epmd and sidecar by pid and command line, and
 * kills a node's whole process tree, without asking the node.
 */
import * as fs from 'fs';
import { BrokerError } from './broker-error';

/** uid and gid of a local user, from /etc/passwd. */
export function localUser(name: string): { uid: number; gid: number; home: string } {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 7) return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] };
  }
  throw new BrokerError(`no local user ${JSON.stringify(name)} (is rabbitmq-server installed?)`, 'ESTART');
}

/** True if `pid` exists (another user's process counts). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True if the command line of `pid` matches `re`; false if it is gone or unreadable. */
export function cmdlineMatches(pid: number, re: RegExp): boolean {
  try {
    return re.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}

/** The pid in `pidFile` if that process runs and its command line matches `re`, else null (no file too). */
export function pidFileProcess(pidFile: string, re: RegExp): number | null {
  try {
    const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && alive(pid) && cmdlineMatches(pid, re)) return pid;
  } catch {
    // no pid file
  }
  return null;
}

/** Every descendant of `pid` (via /proc), deepest last. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      // pid (comm) state ppid ...; comm may contain spaces and parentheses
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(e));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}
