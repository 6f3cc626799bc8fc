#!/usr/bin/env node
// npm test: builds the SDK (and the demo's copy of it), builds the Herald
// binary from the repository root into a temp dir, then runs the unit,
// end-to-end (Node), browser and admin UI (headless Chromium) tests with Node's test
// runner. Every test starts and stops its own servers. The last lines name
// the skipped tests and say how many tests passed, failed and were skipped.
//
// Environment: HERALD_BIN=path skips the Go build (uses that binary);
// HERALD_TESTS=unit,e2e,browser,admin selects suites (default all).

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const jsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoRoot = path.resolve(jsDir, '..');
const started = Date.now();
const tmp = mkdtempSync(path.join(tmpdir(), 'herald-js-test-'));
// The whole run is bounded: a stuck run kills itself.
const overall = setTimeout(() => {
  console.error('npm test: overall timeout (15 min), aborting');
  process.exit(1);
}, 15 * 60 * 1000);
overall.unref();

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', timeout: 10 * 60 * 1000, ...opts });
  if (r.status !== 0) {
    console.error(`npm test: ${cmd} ${args.join(' ')} failed (${r.status ?? r.signal})`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
}

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
if (!existsSync(path.join(jsDir, 'node_modules', 'typescript')) || !existsSync(path.join(jsDir, 'node_modules', 'playwright-core'))) {
  console.log('== install: npm ci');
  run(npm, ['ci', '--no-audit', '--no-fund'], { cwd: jsDir });
}
console.log('== build: SDK and web/static copy');
run(npm, ['run', '--silent', 'build:web'], { cwd: jsDir });

console.log('== check: the admin UI\'s copy of uPlot matches node_modules');
run(process.execPath, ['scripts/vendor-uplot.mjs', '--check'], { cwd: jsDir });

console.log('== typecheck: public API as a consumer uses it');
run(npm, ['run', '--silent', 'typecheck'], { cwd: jsDir });

let bin = process.env.HERALD_BIN;
if (!bin) {
  console.log('== build: go build ./cmd/herald');
  bin = path.join(tmp, 'herald');
  run('go', ['build', '-o', bin, './cmd/herald'], { cwd: repoRoot });
}

const suites = (process.env.HERALD_TESTS || 'unit,e2e,browser,admin').split(',');

// The browser tests use Debian's Chromium (never a downloaded browser).
const hasChromium = () => spawnSync('sh', ['-c', 'command -v chromium'], { stdio: 'ignore' }).status === 0;
if ((suites.includes('browser') || suites.includes('admin')) && !hasChromium() && !process.env.HERALD_NO_INSTALL && process.getuid?.() === 0) {
  console.log('== install: chromium (Debian package)');
  const opts = { stdio: 'inherit', timeout: 10 * 60 * 1000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } };
  if (spawnSync('apt-get', ['install', '-y', 'chromium'], opts).status !== 0) {
    spawnSync('apt-get', ['update'], opts);
    spawnSync('apt-get', ['install', '-y', 'chromium'], opts);
  }
}
const files = suites.map((s) => path.join('test', `${s}.test.mjs`)).filter((f) => existsSync(path.join(jsDir, f)));
const tap = path.join(tmp, 'report.tap');
console.log(`== test: ${files.join(' ')}`);
const child = spawn(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-timeout=180000', '--test-force-exit', '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files],
  { cwd: jsDir, stdio: 'inherit', env: { ...process.env, HERALD_BIN: bin } },
);
const code = await new Promise((resolve) => child.on('exit', (c, sig) => resolve(c ?? (sig ? 1 : 0))));
// Count the TAP report's test points (suites excluded). --test-force-exit
// may end the run before the reporter's own '# pass' summary. A skipped
// test ('ok N - name # SKIP reason') is counted as skipped, not passed.
let pass = 0;
let fail = 0;
const skipped = [];
try {
  const lines = readFileSync(tap, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*(not ok|ok) \d+ - (.*?)( # SKIP(?: (.*))?)?$/.exec(lines[i]);
    if (!m) continue;
    let suite = false;
    for (let j = i + 1; j < lines.length && /^\s*(---|[a-z_]+:|\.\.\.|\s)/.test(lines[j]) && !/^\s*(not ok|ok) \d+/.test(lines[j]); j++) {
      if (/^\s*type: 'suite'/.test(lines[j])) suite = true;
      if (/^\s*\.\.\.\s*$/.test(lines[j])) break;
    }
    if (suite) continue;
    if (m[1] === 'not ok') fail++;
    else if (m[3]) skipped.push(`${m[2]}: ${m[4] || '(no reason given)'}`);
    else pass++;
  }
} catch {
  fail = Math.max(fail, 1);
}
if (code !== 0 && fail === 0) fail = 1;
rmSync(tmp, { recursive: true, force: true });
console.log(`\nherald-client tests finished in ${((Date.now() - started) / 1000).toFixed(1)} s`);
// The skipped tests and TAP-style counts (read by scripts/test.sh), then the
// plain closing line.
for (const s of skipped) console.log(`skipped: ${s}`);
console.log(`# tests ${pass + fail + skipped.length}\n# pass ${pass}\n# fail ${fail}\n# skip ${skipped.length}`);
console.log(`${pass} passed, ${fail} failed, ${skipped.length} skipped`);
process.exit(fail > 0 || code !== 0 ? 1 : 0);
