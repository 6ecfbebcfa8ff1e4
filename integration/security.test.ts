/**
 * The link is the broker's alone, tried as a hostile local user would against
 * the real broker: a peer without the token (same uid) and a peer of another
 * uid are refused; Warren's files are 0600 in 0700 directories; a queue named
 * like a priority sub-queue cannot touch that priority queue; and a broker
 * run as Debian's `rabbitmq` user boots and serves, with its socket in a
 * private directory that a planted socket cannot stand in for.
 */
import { spawnSync } from 'child_process';
import * as amqp from 'amqplib';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { stageInstall } from '../src/cli/plugin-build';
import { freePort } from '../src/cli/ports';
import { localUser } from '../src/cli/proc';
import { broker, cleanRestart, connect, drainBodies, qname, waitFor } from './harness';

/** The socket path the node's plugin uses (rabbit_warren_sidecar:socket_path/0). */
async function socketPath(b: Broker): Promise<string> {
  const out = await b.ctl(['eval', 'rabbit_warren_sidecar:socket_path().']);
  const m = /^"(.*)"$/.exec(out.trim());
  if (!m) throw new Error(`unexpected socket_path() output: ${out}`);
  return m[1];
}

/** Connects to `sock`, writes `bytes`, and resolves with what came back before the sidecar closed the connection. */
function tryPeer(sock: string, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const s = net.connect(sock, () => s.write(bytes));
    s.on('data', (d) => got.push(d));
    s.once('error', reject);
    s.once('close', () => resolve(Buffer.concat(got)));
  });
}

function frame(payload: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length);
  return Buffer.concat([head, payload]);
}

/** Every file and directory under `root` with its permission bits and owner. */
function modes(root: string): { p: string; dir: boolean; mode: number; uid: number }[] {
  const out: { p: string; dir: boolean; mode: number; uid: number }[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      // A live store renames and deletes files between the listing and the lstat.
      const st = fs.lstatSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      out.push({ p, dir: e.isDirectory(), mode: st.mode & 0o777, uid: st.uid });
      if (e.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}

async function publishConfirmed(ch: amqp.ConfirmChannel, q: string, bodies: string[], opts: amqp.Options.Publish = {}): Promise<void> {
  for (const b of bodies) ch.sendToQueue(q, Buffer.from(b), { persistent: true, ...opts });
  await ch.waitForConfirms();
}

describe('on the suite broker', () => {
  it('refuses, and logs, a same-uid peer without the token and a peer of another uid, and keeps serving the broker', async () => {
    const b = broker();
    const sock = await socketPath(b);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(sock)).mode & 0o777).toBe(0o700);

    // Same uid (root, as the broker here): no token, a wrong token, a 1 GiB frame header. Nothing comes back.
    const stats = Buffer.from([17, 0, 0, 0, 1]);
    expect((await tryPeer(sock, frame(stats))).length).toBe(0);
    expect((await tryPeer(sock, frame(Buffer.concat([Buffer.from([20, 0, 0, 0, 1]), crypto.randomBytes(32)])))).length).toBe(0);
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(1 << 30);
    expect((await tryPeer(sock, huge)).length).toBe(0);
    await waitFor(async () => {
      const log = fs.readFileSync(b.logFile, 'utf8');
      return /refused: first frame is op 17, not AUTH/.test(log) && /refused: wrong token/.test(log) && /refused: frame of 1073741824 bytes exceeds the 64-byte limit/.test(log);
    });
    const log = fs.readFileSync(b.logFile, 'utf8');
    expect(log).toMatch(/warren: \[warn\] connection \d+ refused: first frame is op 17, not AUTH/);
    expect(log).toMatch(/refused: wrong token/);
    expect(log).toMatch(/refused: frame of 1073741824 bytes exceeds the 64-byte limit/);

    // Another uid cannot even reach the socket: its directory is 0700.
    const nobody = localUser('nobody');
    const r = spawnSync(process.execPath, ['-e', `require('net').connect(${JSON.stringify(sock)}).on('connect', () => { console.log('CONNECTED'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); })`], {
      uid: nobody.uid,
      gid: nobody.gid,
      encoding: 'utf8',
    });
    expect(r.stdout.trim()).toBe('EACCES');

    // The broker's own connection was never disturbed.
    const conn = await connect();
    const ch = await conn.createConfirmChannel();
    const q = qname('after-peers');
    await ch.assertQueue(q, { durable: true });
    await publishConfirmed(ch, q, ['a', 'b', 'c']);
    expect(await drainBodies(ch, q)).toEqual(['a', 'b', 'c']);
    await ch.deleteQueue(q);
    await conn.close();
  });

  it("keeps Warren's files private: files 0600, directories 0700", async () => {
    const conn = await connect();
    const ch = await conn.createConfirmChannel();
    const q = qname('modes');
    await ch.assertQueue(q, { durable: true });
    await publishConfirmed(ch, q, Array.from({ length: 50 }, (_, i) => `m${i}`));
    const all = modes(broker().warrenDir('/'));
    expect(all.some((e) => !e.dir && /\.rdq$|journal|\.ldb|\.log$/.test(e.p))).toBe(true);
    expect(all.filter((e) => e.dir && e.mode !== 0o700)).toEqual([]);
    expect(all.filter((e) => !e.dir && e.mode !== 0o600)).toEqual([]);
    expect(fs.statSync(broker().warrenDir('/')).mode & 0o777).toBe(0o700);
    await ch.deleteQueue(q);
    await conn.close();
  });

  it("a durable queue named like a priority sub-queue leaves that priority queue's 200 messages intact, across clean and crash restarts", async () => {
    let conn = await connect();
    let ch = await conn.createConfirmChannel();
    const victim = qname('victim');
    const attacker = `${victim}\u0000\u0001`; // the name of victim's priority-1 sub-queue
    await ch.assertQueue(victim, { durable: true, arguments: { 'x-max-priority': 2 } });
    const victimBodies = [...Array.from({ length: 100 }, (_, i) => `v1-${i}`), ...Array.from({ length: 100 }, (_, i) => `v0-${i}`)];
    await publishConfirmed(ch, victim, victimBodies.slice(0, 100), { priority: 1 });
    await publishConfirmed(ch, victim, victimBodies.slice(100), { priority: 0 });
    await ch.assertQueue(attacker, { durable: true });
    const attackerBodies = Array.from({ length: 5 }, (_, i) => `a-${i}`);
    await publishConfirmed(ch, attacker, attackerBodies);

    const counts = async (c: amqp.Channel) => [(await c.checkQueue(victim)).messageCount, (await c.checkQueue(attacker)).messageCount];
    expect(await counts(ch)).toEqual([200, 5]);

    conn = await cleanRestart(conn);
    ch = await conn.createConfirmChannel();
    expect(await counts(ch)).toEqual([200, 5]);

    await broker().ctl(['eval', 'mnesia:dump_log().']);
    await conn.close();
    await broker().kill();
    await broker().start();
    conn = await connect();
    ch = await conn.createConfirmChannel();
    expect(await counts(ch)).toEqual([200, 5]);
    // Priority order: the priority-1 messages first, each priority in publish order.
    expect(await drainBodies(ch, victim)).toEqual(victimBodies);
    expect(await drainBodies(ch, attacker)).toEqual(attackerBodies);
    await ch.deleteQueue(victim);
    await ch.deleteQueue(attacker);
    await conn.close();
  });
});

describe("a broker run as Debian's rabbitmq user", () => {
  const tmp: string[] = [];
  let b: Broker | undefined;

  afterAll(async () => {
    if (b) {
      for (const line of b.errorEntries(50)) process.stdout.write(`${line}\n`);
      await b.kill();
    }
    for (const d of tmp) fs.rmSync(d, { recursive: true, force: true });
  });

  it('boots with Warren and serves end to end; its socket is in a private /tmp directory (the path is too long), and a socket planted at a predictable path gets nothing', async () => {
    const rabbitmq = localUser('rabbitmq');
    const installDir = stageInstall(fs.mkdtempSync(path.join(os.tmpdir(), "warren-install-")), broker().rabbitmq.series);
    tmp.push(installDir);
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-nonroot-'));
    tmp.push(base);
    fs.chmodSync(base, 0o755);
    const dataDir = path.join(base, 'a-data-directory-whose-path-is-long-enough-to-overflow-a-unix-socket-path');
    const nodeName = `warren-nonroot-${process.pid}@localhost`;
    const nodeDir = path.join(dataDir, 'mnesia', nodeName);
    const inDataDir = path.join(nodeDir, 'warren', 'sidecar.sock');
    expect(inDataDir.length).toBeGreaterThan(100);

    // An impostor listens where earlier versions fell back to: /tmp/warren-<hash of the path>.sock.
    const predictable = `/tmp/warren-${crypto.createHash('sha256').update(inDataDir).digest('hex').slice(0, 16)}.sock`;
    let impostorConnections = 0;
    const impostor = net.createServer((s) => {
      impostorConnections++;
      s.destroy();
    });
    fs.rmSync(predictable, { force: true });
    await new Promise<void>((r) => impostor.listen(predictable, r));
    fs.chmodSync(predictable, 0o777);

    try {
      const amqpPort = await freePort();
      b = new Broker({ dataDir, amqpPort, distPort: await freePort(), epmdPort: await freePort(), nodeName, user: 'rabbitmq', installDir, sidecarArgs: ['--file-size-limit', String(256 * 1024)] });
      await b.start();

      const uidOf = (pid: number) => Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
      expect(uidOf(b.beamPid()!)).toBe(rabbitmq.uid);
      const sidecars = b.sidecarPids();
      expect(sidecars.length).toBe(1);
      expect(uidOf(sidecars[0])).toBe(rabbitmq.uid);

      const sock = await socketPath(b);
      expect(sock).toMatch(/^\/tmp\/warren-[0-9a-f]{24}\/s\.sock$/);
      const sockDir = fs.statSync(path.dirname(sock));
      expect([sockDir.mode & 0o777, sockDir.uid]).toEqual([0o700, rabbitmq.uid]);
      expect(fs.statSync(sock).mode & 0o777).toBe(0o600);

      const url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
      let conn = await amqp.connect(url);
      let ch = await conn.createConfirmChannel();
      const q = 'nonroot-work';
      await ch.assertQueue(q, { durable: true });
      const bodies = Array.from({ length: 100 }, (_, i) => `job-${i}`);
      await publishConfirmed(ch, q, bodies);
      await conn.close();

      await b.stop();
      expect(fs.existsSync(path.dirname(sock))).toBe(false); // the private directory goes with the node
      await b.start();
      conn = await amqp.connect(url);
      ch = await conn.createConfirmChannel();
      expect(await drainBodies(ch, q)).toEqual(bodies);
      await conn.close();

      const files = modes(b.warrenDir('/'));
      expect(files.filter((e) => e.uid !== rabbitmq.uid)).toEqual([]);
      expect(files.filter((e) => (e.dir ? e.mode !== 0o700 : e.mode !== 0o600))).toEqual([]);
      expect(impostorConnections).toBe(0);
      await b.stop();
    } finally {
      impostor.close();
      fs.rmSync(predictable, { force: true });
    }
  });
});
