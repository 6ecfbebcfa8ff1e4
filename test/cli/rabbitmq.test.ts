import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { RuntimeError, providedRuntimes, runtimeFor, seriesOf } from '../../src/cli/rabbitmq';

describe('the brokers this machine provides', () => {
  const saved = { roots: process.env.WARREN_ROOTS, rmq: process.env.WARREN_RABBITMQ };
  let roots: string;

  beforeEach(() => {
    roots = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-roots-unit-'));
    process.env.WARREN_ROOTS = roots;
    delete process.env.WARREN_RABBITMQ;
  });
  afterEach(() => {
    fs.rmSync(roots, { recursive: true, force: true });
    for (const [k, v] of [['WARREN_ROOTS', saved.roots], ['WARREN_RABBITMQ', saved.rmq]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  function plantRoot(suite: string, marker: string | undefined): string {
    const dir = path.join(roots, suite);
    fs.mkdirSync(path.join(dir, 'usr/lib/rabbitmq/plugins'), { recursive: true });
    if (marker !== undefined) fs.writeFileSync(path.join(dir, '.warren-root'), marker);
    return dir;
  }

  it('names a version by its series', () => {
    expect(seriesOf('4.0.5')).toBe('4.0');
    expect(seriesOf('3.10.8-1.1')).toBe('3.10');
    expect(seriesOf('4.3.6')).toBe('4.3');
  });

  it('takes a root only once its marker says it is complete, and of the series it stands for', () => {
    plantRoot('testing', undefined); // interrupted build: no marker
    const trixie = plantRoot('trixie', 'series=4.0\nrabbitmq=4.0.5\nerlang=27.3.4.1\nsuite=trixie\n');
    const rt = providedRuntimes();
    const hostSeries = [...rt.values()].find((r) => r.root === undefined)?.series;
    if (hostSeries !== '4.3') expect(rt.has('4.3')).toBe(false);
    if (hostSeries !== '4.0') {
      const r = rt.get('4.0')!;
      expect(r).toMatchObject({ version: '4.0.5', erlang: '27.3.4.1', root: trixie });
      expect(r.hostPath('/usr/lib/rabbitmq/plugins')).toBe(path.join(trixie, 'usr/lib/rabbitmq/plugins'));
      const c = r.command('rabbitmqctl', ['status'], { uid: 110, gid: 120, cwd: '/data', binds: ['/data'] });
      expect(c.file).toMatch(/scripts\/in-root\.sh$/);
      expect(c.args).toEqual(['4.0', '--user', '110:120', '--cwd', '/data', '--bind', '/data', '--', 'rabbitmqctl', 'status']);
      expect(c.asUser).toBe(false);
    }
  });

  it('refuses a testing root that now carries another series', () => {
    plantRoot('testing', 'series=4.3\nrabbitmq=4.4.0\nerlang=29.1\nsuite=testing\n');
    const rt = providedRuntimes();
    if ([...rt.values()].every((r) => r.series !== '4.3' || r.root !== undefined)) expect(rt.has('4.3')).toBe(false);
  });

  it('says what is provided when asked for a series that is not, or is unknown', () => {
    plantRoot('trixie', undefined);
    plantRoot('testing', undefined);
    const host = [...providedRuntimes().values()].map((r) => r.series);
    const missing = (['4.0', '4.3'] as const).find((s) => !host.includes(s));
    if (missing) expect(() => runtimeFor(missing)).toThrow(new RegExp(`RabbitMQ ${missing} is not provided on this machine \\(provided: `));
    expect(() => runtimeFor('3.9')).toThrow(RuntimeError);
    expect(() => runtimeFor('3.9')).toThrow(/not a supported series \(supported: 3\.10, 4\.0, 4\.3\)/);
  });
});
