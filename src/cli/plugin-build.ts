/**
 * The Erlang plugin rabbitmq_warren as a node loads it: where
 * scripts/build-plugin.sh builds it for a series, rebuilt when its sources
 * are newer, and staged with the sidecar into an install directory for a
 * broker that runs as its own user.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BrokerError } from './broker-error';
import { Series } from './rabbitmq';
import { repoRoot } from './repo';

/** plugin.json: the plugin's name and version, and where the sidecar is. */
function manifest(root: string): { name: string; version: string; sidecar?: { entry?: string } } {
  return JSON.parse(fs.readFileSync(path.join(root, 'plugin.json'), 'utf8')) as { name: string; version: string; sidecar?: { entry?: string } };
}

/** Where scripts/build-plugin.sh puts the plugin built for a series. */
export function pluginBuildDir(series: Series): string {
  return path.join(repoRoot(), 'build', `rabbitmq-${series}`, 'plugins');
}

/** Builds the Erlang plugin for `series` if it is missing or older than its sources; the sidecar must be built. */
export function ensurePlugin(series: Series): void {
  const root = repoRoot();
  const m = manifest(root);
  const app = path.join(pluginBuildDir(series), `${m.name}-${m.version}`, 'ebin', `${m.name}.app`);
  // the header too: a change to it alone must rebuild
  const srcDirs = [path.join(root, 'rabbitmq', 'src'), path.join(root, 'rabbitmq', 'include'), path.join(root, 'rabbitmq', 'priv', 'www', 'js')];
  const appTime = fs.existsSync(app) ? fs.statSync(app).mtimeMs : 0;
  const stale =
    appTime === 0 ||
    srcDirs.some((d) => fs.existsSync(d) && fs.readdirSync(d).some((f) => fs.statSync(path.join(d, f)).mtimeMs > appTime)) ||
    fs.statSync(path.join(root, 'plugin.json')).mtimeMs > appTime;
  if (stale) {
    const r = spawnSync('bash', [path.join(root, 'scripts', 'build-plugin.sh'), series], { cwd: root, encoding: 'utf8' });
    if (r.status !== 0) throw new BrokerError(`building the plugin failed:\n${r.stdout}${r.stderr}`, 'EBUILD');
    // build-plugin.sh leaves the .app untouched when nothing changed
    if (fs.existsSync(app)) fs.utimesSync(app, new Date(), new Date());
  }
  const entry = path.join(root, m.sidecar?.entry ?? 'dist/sidecar/main.js');
  if (!fs.existsSync(entry)) throw new BrokerError(`the sidecar ${entry} is not built: run npm run build`, 'EBUILD');
}

/**
 * Installs Warren's runtime (the built plugin, dist/, plugin.json and the
 * production npm packages) into `dest`, readable by every user, as an
 * operator would install it for a broker that runs as its own user. Returns
 * `dest`. The plugin's sidecar_entry must then point into it (Broker's
 * `installDir` does that).
 */
export function stageInstall(dest: string, series: Series): string {
  const root = repoRoot();
  const m = manifest(root);
  const plugin = `${m.name}-${m.version}`;
  fs.mkdirSync(dest, { recursive: true });
  fs.cpSync(path.join(pluginBuildDir(series), plugin), path.join(dest, 'plugins', plugin), { recursive: true });
  fs.cpSync(path.join(root, 'dist'), path.join(dest, 'dist'), { recursive: true });
  for (const f of ['plugin.json', 'package.json']) fs.copyFileSync(path.join(root, f), path.join(dest, f));
  const r = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new BrokerError(`npm ls failed: ${r.stderr}`, 'EBUILD');
  for (const dir of r.stdout.split('\n').filter((d) => d.startsWith(path.join(root, 'node_modules') + path.sep))) {
    fs.cpSync(dir, path.join(dest, path.relative(root, dir)), { recursive: true });
  }
  spawnSync('chmod', ['-R', 'a+rX', dest]);
  for (let d = dest; d !== path.dirname(d); d = path.dirname(d)) fs.chmodSync(d, fs.statSync(d).mode | 0o111);
  return dest;
}
