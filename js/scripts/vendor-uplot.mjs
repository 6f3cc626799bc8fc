#!/usr/bin/env node
// Copies uPlot (a devDependency, from npm) into web/admin/assets/vendor/
// for the admin UI's plots: the minified IIFE build, its stylesheet and
// its LICENSE, with the version in the file names' header line. The
// copies are committed, so the Go binary embeds them and no page loads
// anything from elsewhere. `--check` only verifies that the committed
// copies match the installed package (npm test runs it).

import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const jsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkgDir = path.join(jsDir, 'node_modules', 'uplot');
const out = path.resolve(jsDir, '..', 'web', 'admin', 'assets', 'vendor');
const version = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
const files = [
  ['dist/uPlot.iife.min.js', 'uPlot.iife.min.js', `/* uPlot ${version} (MIT, see uPlot.LICENSE): copied from npm by js/scripts/vendor-uplot.mjs */\n`],
  ['dist/uPlot.min.css', 'uPlot.min.css', `/* uPlot ${version} (MIT, see uPlot.LICENSE): copied from npm by js/scripts/vendor-uplot.mjs */\n`],
  ['LICENSE', 'uPlot.LICENSE', ''],
];

const check = process.argv.includes('--check');
let stale = [];
if (!check) mkdirSync(out, { recursive: true });
for (const [from, to, header] of files) {
  const want = header + readFileSync(path.join(pkgDir, from), 'utf8');
  const dest = path.join(out, to);
  if (check) {
    if (!existsSync(dest) || readFileSync(dest, 'utf8') !== want) stale.push(to);
  } else {
    writeFileSync(dest, want);
  }
}
if (check && stale.length > 0) {
  console.error(`vendor-uplot: ${stale.join(', ')} in web/admin/assets/vendor/ differ from uplot ${version} in node_modules: run npm run vendor:admin in js/ and commit`);
  process.exit(1);
}
console.log(`vendor-uplot: uPlot ${version} ${check ? 'matches' : '->'} ${path.relative(jsDir, out)}/`);
