/**
 * `warren settings`: plugin.json's settings table written out for people
 * (text, and the README's configuration reference in markdown) and for the
 * Erlang plugin (rabbit_warren_settings.hrl, which the build writes, so the
 * plugin's defaults and its boot-time check come from the same table).
 */
import { expected, flagOf, Setting, SettingValue } from '../sidecar/settings';

export type SettingsFormat = 'text' | 'markdown' | 'erlang' | 'json';

function shown(s: Setting, v: SettingValue): string {
  if (v === null) return s.side === 'build' ? 'set by the build' : 'unset';
  if (Array.isArray(v)) return `[${v.map((x) => JSON.stringify(x)).join(', ')}]`;
  return s.type === 'integer' && s.unit ? `${v} ${s.unit}` : String(v);
}

function who(s: Setting): string {
  return s.side === 'sidecar' ? `sidecar (${flagOf(s.key)})` : s.side;
}

export function formatSettings(table: readonly Setting[], format: SettingsFormat): string {
  switch (format) {
    case 'json':
      return JSON.stringify(table, null, 2) + '\n';
    case 'text':
      return table.map((s) => `${s.key} = ${shown(s, s.default)}   [${expected(s)}; read by the ${who(s)}]\n    ${s.doc}\n`).join('');
    case 'markdown':
      return markdown(table);
    case 'erlang':
      return erlang(table);
  }
}

function markdown(table: readonly Setting[]): string {
  const cell = (t: string) => t.replace(/\|/g, '\\|');
  const rows = table.map((s) => `| \`${s.key}\` | ${cell(shown(s, s.default))} | ${cell(expected(s))} | ${who(s)} | ${cell(s.doc)} |`);
  return ['| setting | default | value | read by | what it does |', '| --- | --- | --- | --- | --- |', ...rows, ''].join('\n');
}

/** An Erlang string literal: the table is ASCII text, but escape what must be. */
function erlString(t: string): string {
  return `"${t.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function erlValue(v: SettingValue): string {
  if (v === null) return 'undefined';
  if (Array.isArray(v)) return `[${v.map(erlString).join(', ')}]`;
  return typeof v === 'number' ? String(v) : erlString(v);
}

function erlType(s: Setting): string {
  switch (s.type) {
    case 'integer':
      return `{integer, ${s.min}, ${s.max ?? 'infinity'}}`;
    case 'enum':
      return `{enum, [${s.values.map(erlString).join(', ')}]}`;
    default:
      return s.type;
  }
}

function erlang(table: readonly Setting[]): string {
  const rows = table.map((s) => `     {${s.key}, ${s.side}, ${erlType(s)}, ${erlValue(s.default)}}`);
  return [
    '%% Generated from plugin.json by `warren settings --format erlang` (scripts/build-plugin.sh).',
    '%% Do not edit: change plugin.json. {Key, Side, Type, Default}; an enum default is a string.',
    '-define(WARREN_SETTINGS,',
    `    [${rows.join(',\n').trimStart()}]).`,
    '',
  ].join('\n');
}
