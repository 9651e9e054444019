// The deployment files stay true: systemd units pass `systemd-analyze verify` (and a bounded
// `systemd-analyze security` exposure), and the Dockerfile copies what the build needs, ships what
// the package ships, and runs a broker command line that `qis broker --check` accepts.
import t, { type Test } from 'tap';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './helpers/run.js';
import { QIS, ROOT, qis } from './helpers/cli.js';

const UNITS = ['qis-broker.service', 'qis-node@.service'];
const INSTALLED = '/usr/local/bin/qis';

function tempDir(t: Test): string {
  const d = mkdtempSync(join(tmpdir(), 'qis-deploy-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function haveSystemdAnalyze(): Promise<boolean> {
  return run('systemd-analyze', ['--version']).then((r) => r.status === 0, () => false);
}

const noSystemd = (await haveSystemdAnalyze()) ? false : 'systemd-analyze is not installed (Debian package systemd; .ci/run installs it)';

t.test('deploy - systemd units verify, and are hardened', { skip: noSystemd }, async (t) => {
  // verify checks that ExecStart's program exists and is executable: the units name the path an
  // `npm install -g` gives (/usr/local/bin/qis); here that path is replaced by a wrapper around
  // this checkout's build, and nothing else in the unit changes.
  const dir = tempDir(t);
  const wrapper = join(dir, 'qis');
  writeFileSync(wrapper, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(QIS)} "$@"\n`);
  chmodSync(wrapper, 0o755);
  for (const unit of UNITS) {
    const text = readFileSync(join(ROOT, 'examples/systemd', unit), 'utf8');
    t.match(text, new RegExp(`^ExecStart=${INSTALLED} `, 'm'), `${unit}: ExecStart runs ${INSTALLED}`);
    for (const line of ['DynamicUser=yes', 'Restart=on-failure', 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'CapabilityBoundingSet=']) {
      t.match(text, new RegExp(`^${line}$`, 'm'), `${unit}: ${line}`);
    }
    t.match(text, /^StateDirectory=qis-/m, `${unit}: StateDirectory`);
    // A template unit is verified as one instance of it.
    const path = join(dir, unit.replace('@.', '@press-hall.'));
    writeFileSync(path, text.replaceAll(INSTALLED, wrapper));
    const v = await run('systemd-analyze', ['verify', path]);
    t.equal(v.status, 0, `${unit}: systemd-analyze verify exit status`);
    t.equal(v.stderr.trim(), '', `${unit}: no warnings`);
    // Exposure 0–10 (systemd's "OK" band is below 5); the threshold is on a 0–100 scale.
    const s = await run('systemd-analyze', ['security', '--offline=yes', '--threshold=25', path]);
    t.equal(s.status, 0, `${unit}: exposure at most 2.5 (${/Overall exposure level[^\n]*/.exec(s.stdout)?.[0] ?? s.stderr})`);
  }
  // The broker unit's command line is one `qis broker` accepts.
  const exec = /^ExecStart=(.*)$/m.exec(readFileSync(join(ROOT, 'examples/systemd/qis-broker.service'), 'utf8'))![1]!.split(' ').slice(1);
  const args = exec.map((a) => (a === '/etc/qis/broker.yaml' ? 'examples/broker.yaml' : a === '/var/lib/qis-broker' ? join(dir, 'state') : a));
  const c = await qis([...args, '--check']);
  t.equal(c.status, 0, c.stderr);
  t.match(c.stdout, `dataDir: ${join(dir, 'state')}`, 'the data directory flag wins over the config file');
});

t.test('deploy - Dockerfile: builds from what it copies, ships what the package ships, runs a valid broker', async (t) => {
  const docker = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const stages = docker.split(/^FROM /m).slice(1);
  t.equal(stages.length, 2, 'multi-stage: build and runtime');
  const [build, runtime] = stages as [string, string];
  // The build stage copies every directory and file the TypeScript build includes (a file by itself or in its directory).
  const include = (JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')) as { include: string[] }).include;
  const copied = [...build.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(' '));
  for (const d of [...include, 'package.json', 'package-lock.json', 'tsconfig.json']) t.ok(copied.some((c) => c === d || d.startsWith(`${c}/`)), `build stage copies ${d}`);
  const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  for (const d of copied) t.notOk(ignored.includes(d), `.dockerignore does not exclude ${d}`);
  for (const d of ['node_modules', 'dist', '.git', 'qis-demo-data']) t.ok(ignored.includes(d), `.dockerignore excludes ${d}`);
  // The runtime stage ships the built directories package.json ships.
  const files = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] }).files.filter((f) => f.startsWith('dist/'));
  const shipped = [...runtime.matchAll(/^COPY --from=build \/app\/(dist\/\S+) /gm)].map((m) => m[1]!);
  t.same(shipped.sort(), files.sort(), 'runtime dist/ directories = package.json files');
  t.match(runtime, /^USER node$/m, 'runs as the unprivileged node user');
  t.notMatch(runtime, /^USER root$/m);
  // The default command is a broker command line qis accepts, and the health check asks its /healthz.
  const entry = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(runtime)![1]!) as string[];
  const cmd = JSON.parse(/^CMD (.*)$/m.exec(runtime)![1]!) as string[];
  t.same(entry, ['node', '/app/dist/cli/qis.js']);
  const dir = tempDir(t);
  const c = await qis([...cmd.map((a) => (a === '/data' ? dir : a)), '--check']);
  t.equal(c.status, 0, c.stderr);
  const http = cmd[cmd.indexOf('--http') + 1]!;
  t.match(runtime, new RegExp(`HEALTHCHECK [\\s\\S]*http://${http.replace('.', '\\.')}/healthz`), `HEALTHCHECK asks http://${http}/healthz`);
  t.match(c.stdout, /http:\n\s+host: 127\.0\.0\.1\n\s+port: 9100/, 'the broker serves /healthz there');
});
