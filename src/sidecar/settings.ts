/**
 * Warren's settings: the one table of them is plugin.json's `settings`, with
 * each setting's default, type and meaning. From it come the sidecar's flags
 * (config.ts), the Erlang plugin's defaults and its check at boot (the build
 * writes them into rabbit_warren_settings.hrl: `warren settings --format
 * erlang`) and the README's configuration reference (`--format markdown`).
 *
 * An operator sets any of them in RabbitMQ's advanced.config:
 *   [{rabbitmq_warren, [{durability, write}, {read_ahead, 128}]}].
 * `side` says who reads it: `plugin` (the Erlang side), `sidecar` (passed to
 * it as `--key-with-dashes VALUE`), `build` (written by the build). A
 * manifest that does not parse, or a setting with a malformed entry, is an
 * error naming the file and the key: never a silent fall-back to defaults.
 */
import * as fs from 'fs';
import * as path from 'path';

export type SettingSide = 'plugin' | 'sidecar' | 'build';

export type SettingType =
  | { type: 'integer'; min: number; max?: number; unit?: string }
  | { type: 'enum'; values: readonly string[] }
  /** A file path (a string). */
  | { type: 'path' }
  /** A list of sidecar flags and their values (sidecar_args). */
  | { type: 'flags' };

export type SettingValue = number | string | string[] | null;

export type Setting = SettingType & {
  key: string;
  side: SettingSide;
  /** null: unset unless the operator (or the build) sets it. */
  default: SettingValue;
  doc: string;
};

export class SettingsError extends Error {
  readonly code = 'ESETTINGS';
}

/** plugin.json of this checkout or install (dist/sidecar/ → ../../plugin.json). */
export const MANIFEST = path.resolve(__dirname, '..', '..', 'plugin.json');

let cached: readonly Setting[] | undefined;

/** The settings of plugin.json; throws SettingsError naming the file and key if it is malformed. */
export function settings(manifest = MANIFEST): readonly Setting[] {
  if (manifest === MANIFEST && cached) return cached;
  let text: string;
  try {
    text = fs.readFileSync(manifest, 'utf8');
  } catch (e) {
    throw new SettingsError(`cannot read ${manifest}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SettingsError(`${manifest} is not valid JSON: ${(e as Error).message}`);
  }
  const table = (json as { settings?: unknown } | null)?.settings;
  if (typeof table !== 'object' || table === null || Array.isArray(table)) throw new SettingsError(`${manifest}: "settings" must be an object of settings`);
  const out = Object.entries(table as Record<string, unknown>).map(([key, raw]) => parseSetting(manifest, key, raw));
  if (manifest === MANIFEST) cached = out;
  return out;
}

function parseSetting(manifest: string, key: string, raw: unknown): Setting {
  const bad = (why: string) => new SettingsError(`${manifest}: settings.${key}: ${why}`);
  if (!/^[a-z][a-z0-9_]*$/.test(key)) throw bad('the name must be lowercase letters, digits and _ (an Erlang atom)');
  if (typeof raw !== 'object' || raw === null) throw bad('must be an object');
  const r = raw as Record<string, unknown>;
  if (r.side !== 'plugin' && r.side !== 'sidecar' && r.side !== 'build') throw bad(`side must be plugin, sidecar or build, got ${JSON.stringify(r.side)}`);
  if (typeof r.doc !== 'string' || r.doc === '') throw bad('doc must be a non-empty string');
  const common = { key, side: r.side as SettingSide, doc: r.doc };
  let s: Setting;
  switch (r.type) {
    case 'integer': {
      if (!Number.isSafeInteger(r.min)) throw bad('an integer setting needs an integer min');
      if (r.max !== undefined && (!Number.isSafeInteger(r.max) || (r.max as number) < (r.min as number))) throw bad('max must be an integer not below min');
      if (r.unit !== undefined && typeof r.unit !== 'string') throw bad('unit must be a string');
      s = { ...common, type: 'integer', min: r.min as number, max: r.max as number | undefined, unit: r.unit as string | undefined, default: r.default as SettingValue };
      break;
    }
    case 'enum':
      if (!Array.isArray(r.values) || r.values.length === 0 || !r.values.every((v) => typeof v === 'string' && /^[a-z0-9_]+$/.test(v))) {
        throw bad('an enum setting needs values: a list of lowercase words');
      }
      s = { ...common, type: 'enum', values: r.values as string[], default: r.default as SettingValue };
      break;
    case 'path':
    case 'flags':
      s = { ...common, type: r.type, default: r.default as SettingValue };
      break;
    default:
      throw bad(`type must be integer, enum, path or flags, got ${JSON.stringify(r.type)}`);
  }
  if (s.default !== null) {
    const why = s.type === 'flags' ? (Array.isArray(s.default) ? undefined : 'must be a list') : checkValue(s, s.default);
    if (why) throw bad(`default ${JSON.stringify(s.default)} ${why}`);
  } else if (s.side === 'plugin') {
    throw bad('a plugin setting needs a default (the plugin reads it at every use)');
  }
  return s;
}

/** What a value of this setting must be, for error messages. */
export function expected(s: Setting): string {
  switch (s.type) {
    case 'integer':
      return s.max !== undefined ? `an integer from ${s.min} to ${s.max}` : `an integer of at least ${s.min}`;
    case 'enum':
      return `one of ${s.values.join(', ')}`;
    case 'path':
      return 'a file path';
    case 'flags':
      return 'a list of sidecar flags and values';
  }
}

/** Why `value` is not valid for `s`, or undefined if it is. Integers may come as decimal strings (flags). */
export function checkValue(s: Setting, value: unknown): string | undefined {
  const no = `must be ${expected(s)}`;
  switch (s.type) {
    case 'integer': {
      const n = typeof value === 'string' && /^-?[0-9]+$/.test(value) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < s.min || (s.max !== undefined && n > s.max)) return no;
      return undefined;
    }
    case 'enum':
      return typeof value === 'string' && s.values.includes(value) ? undefined : no;
    case 'path':
      return typeof value === 'string' && value !== '' ? undefined : no;
    case 'flags':
      return no; // checked flag by flag (parseSidecarFlags)
  }
}

export function flagOf(key: string): string {
  return `--${key.replace(/_/g, '-')}`;
}

/** The sidecar setting a flag sets, if any. */
export function sidecarSettingOfFlag(flag: string, table = settings()): Setting | undefined {
  return table.find((s) => s.side === 'sidecar' && flagOf(s.key) === flag);
}

export function settingNamed(key: string, table = settings()): Setting | undefined {
  return table.find((s) => s.key === key);
}
