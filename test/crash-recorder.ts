/**
 * Records the durability of every file under a directory while real file
 * operations run on it (write, fsync, rename, truncate, unlink, through
 * fs.promises and its FileHandle), and before each mutating operation builds
 * the two disks a crash there could leave:
 *
 * - `dropped`: only what was fsynced: each file as of its inode's last fsync
 *   (empty if none), each directory entry only if its directory was fsynced
 *   since it appeared;
 * - `torn`: every current name, each file with its durable bytes plus a
 *   random prefix of what was appended since (in-place rewrites as they are).
 *
 * A directory written by code the recorder cannot see (LevelDB writes its
 * files from native code) is declared `opaque`: its contents count as durable
 * only as of the last `settle()` (called once LevelDB's synced write
 * returned, which LevelDB documents as making every earlier write durable),
 * and only while its own entry is durable in its parent. A dropped image
 * holds that settled copy (or an empty directory if there is none, or the
 * directory was replaced since); a torn image holds its files as they are
 * (a process crash). States between the two, a prefix of LevelDB's unsynced
 * log, are LevelDB's own recovery to get right and are not built here.
 *
 * Used by the crash-state enumeration tests of the queue index and the store.
 */
import * as fs from 'fs';
import * as path from 'path';
import sinon from 'sinon';

type Handle = fs.promises.FileHandle;

export class Recorder {
  ops = 0;
  /**
   * Files by a logical id, given when a file is created: the kernel reuses
   * the inode number of a file that a rename replaced, and a crash image must
   * not mistake the new file for the old one.
   */
  private logical = new Map<number, number>();
  private nextLogical = 0;
  /** logical file → its content as of its last fsync. */
  private durableContent = new Map<number, Buffer>();
  /** directory → (name → logical file) as of its last fsync. */
  private durableEntries = new Map<string, Map<string, number>>();
  private handles = new WeakMap<object, string>();
  readonly images: { at: number; dropped: string; torn: string }[] = [];
  private stubs: sinon.SinonStub[] = [];
  /** opaque directory → its settled copy and the logical id it had then. */
  private opaqueDirs = new Map<string, { copy: string; lid: number } | undefined>();
  private settles = 0;

  constructor(
    private readonly root: string,
    private readonly scratch: string,
    private readonly random: () => number,
  ) {}

  async install(): Promise<void> {
    fs.mkdirSync(this.scratch, { recursive: true });
    const probe = await fs.promises.open(path.join(this.scratch, 'probe'), 'w');
    await probe.close();
    fs.rmSync(path.join(this.scratch, 'probe'));
    const proto = Object.getPrototypeOf(probe) as Record<string, unknown>;
    const self = this;
    const fsp = fs.promises as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const mine = (p: string | undefined): p is string => p !== undefined && (p === self.root || p.startsWith(self.root + path.sep));
    const wrapFs = (name: string, mutating: (args: unknown[]) => boolean) => {
      const real = fsp[name].bind(fs.promises);
      this.stubs.push(
        sinon.stub(fsp, name).callsFake(async (...args: unknown[]) => {
          const p = typeof args[0] === 'string' ? path.resolve(args[0]) : undefined;
          if (mine(p) && mutating(args)) self.snapshot(`${name} ${p}`);
          const created = mine(p) && !fs.existsSync(p);
          const r = await real(...args);
          if (name === 'open' && mine(p)) self.handles.set(r as object, p);
          if (created && fs.existsSync(p)) self.logical.set(fs.statSync(p).ino, ++self.nextLogical);
          return r;
        }),
      );
    };
    wrapFs('open', (a) => typeof a[1] === 'string' && a[1] !== 'r' && !fs.existsSync(a[0] as string));
    for (const n of ['rename', 'rm', 'truncate', 'mkdir', 'writeFile', 'unlink', 'appendFile']) wrapFs(n, () => true);
    const wrapFh = (name: string, after?: (p: string) => void) => {
      const real = proto[name] as (...a: unknown[]) => Promise<unknown>;
      this.stubs.push(
        sinon.stub(proto, name).callsFake(async function (this: Handle, ...args: unknown[]) {
          const p = self.handles.get(this);
          if (mine(p)) self.snapshot(`fh.${name} ${p}`);
          const r = await real.apply(this, args);
          if (mine(p)) after?.(p);
          return r;
        }),
      );
    };
    wrapFh('write');
    wrapFh('writeFile');
    wrapFh('truncate');
    const synced = (p: string) => {
      const st = fs.statSync(p);
      if (st.isDirectory()) this.durableEntries.set(p, this.listing(p));
      else this.durableContent.set(this.lid(st.ino), fs.readFileSync(p));
    };
    wrapFh('sync', synced);
    wrapFh('datasync', synced);
  }

  /** Declares `dir` opaque (see above). */
  opaque(dir: string): void {
    this.opaqueDirs.set(path.resolve(dir), undefined);
  }

  /** The opaque `dir`'s current contents are durable now. */
  settle(dir: string): void {
    const d = path.resolve(dir);
    const copy = path.join(this.scratch, `settled-${this.settles++}`);
    fs.cpSync(d, copy, { recursive: true });
    this.opaqueDirs.set(d, { copy, lid: this.lid(fs.statSync(d).ino) });
  }

  uninstall(): void {
    for (const s of this.stubs) s.restore();
    this.stubs = [];
  }

  private lid(ino: number): number {
    let l = this.logical.get(ino);
    if (l === undefined) this.logical.set(ino, (l = ++this.nextLogical));
    return l;
  }

  private listing(dir: string): Map<string, number> {
    const m = new Map<string, number>();
    for (const n of fs.readdirSync(dir)) {
      const st = statIfThere(path.join(dir, n));
      if (st) m.set(n, this.lid(st.ino));
    }
    return m;
  }

  /** The crash images of the disk as it is now, before the operation about to run. */
  readonly log: string[] = [];

  /** The images of the disk as it is now, after the last operation (the end of a workload). */
  finish(): void {
    this.snapshot('end');
  }

  private snapshot(what: string): void {
    const at = this.ops++;
    this.log.push(`${at} ${what.replace(this.root, '')}`);
    const dropped = path.join(this.scratch, `${at}-dropped`);
    const torn = path.join(this.scratch, `${at}-torn`);
    fs.mkdirSync(dropped, { recursive: true });
    fs.mkdirSync(torn, { recursive: true });
    if (fs.existsSync(this.root)) {
      this.buildDropped(this.root, dropped);
      this.buildTorn(this.root, torn);
    }
    this.images.push({ at, dropped, torn });
  }

  private buildDropped(dir: string, out: string): void {
    const durable = this.durableEntries.get(dir) ?? new Map<string, number>();
    for (const [name, lid] of durable) {
      const cur = path.join(dir, name);
      if (this.opaqueDirs.has(cur)) {
        const settled = this.opaqueDirs.get(cur);
        if (settled && settled.lid === lid) fs.cpSync(settled.copy, path.join(out, name), { recursive: true });
        else fs.mkdirSync(path.join(out, name));
        continue;
      }
      const st = statIfThere(cur);
      const isDir = st !== undefined && st.isDirectory() && this.lid(st.ino) === lid;
      if (isDir) {
        fs.mkdirSync(path.join(out, name));
        this.buildDropped(cur, path.join(out, name));
      } else {
        fs.writeFileSync(path.join(out, name), this.durableContent.get(lid) ?? Buffer.alloc(0));
      }
    }
  }

  private buildTorn(dir: string, out: string): void {
    for (const name of fs.readdirSync(dir)) {
      const p = path.join(dir, name);
      const st = statIfThere(p);
      if (!st) continue;
      if (this.opaqueDirs.has(p)) {
        fs.cpSync(p, path.join(out, name), { recursive: true });
        continue;
      }
      if (st.isDirectory()) {
        fs.mkdirSync(path.join(out, name));
        this.buildTorn(p, path.join(out, name));
        continue;
      }
      const cur = readIfThere(p);
      if (!cur) continue;
      const old = this.durableContent.get(this.lid(st.ino)) ?? Buffer.alloc(0);
      let img = cur;
      if (cur.length > old.length && cur.subarray(0, old.length).equals(old)) {
        img = cur.subarray(0, old.length + Math.floor(this.random() * (cur.length - old.length + 1)));
      }
      fs.writeFileSync(path.join(out, name), img);
    }
  }
}

/*
 * A snapshot lists the disk while the store's async operations run on libuv's
 * threads: a name listed may be renamed or unlinked before it is read (a hint's
 * `.tmp` renamed into place, a file deleted). Such an entry is gone from the image.
 */
function statIfThere(p: string): fs.Stats | undefined {
  return fs.statSync(p, { throwIfNoEntry: false });
}

function readIfThere(p: string): Buffer | undefined {
  try {
    return fs.readFileSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
