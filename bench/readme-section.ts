/**
 * Writes a benchmark's section of bench/README.md between its markers
 * (`<!-- NAME:begin -->` and `<!-- NAME:end -->`), or appends it under
 * `heading` when the markers are not there yet.
 */
import * as fs from 'fs';
import * as path from 'path';

export function refreshReadmeSection(name: string, section: string, heading: string): void {
  const file = path.resolve(__dirname, '../../bench/README.md');
  const text = fs.readFileSync(file, 'utf8');
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const block = `${begin}\n${section}${end}`;
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  const next = i >= 0 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text.trimEnd()}\n\n${heading}\n\n${block}\n`;
  fs.writeFileSync(file, next);
}
