// The data directory's lock survives pid reuse (issue 16 item 6): after a power cut the booting
// system hands the dead holder's pid to some other process; that must not keep the node down.
// Real processes throughout: a `sleep` stands for the unrelated process that got the pid, and a
// node process that took the lock stands for a live holder.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lockDir } from '../src/index.js';
import { openStore, STORE_FILES } from '../broker/store.js';
import { ROOT } from './helpers/cli.js';

if (!existsSync('/proc/self/stat')) {
  t.plan(0, 'no /proc here: the lock falls back to the pid alone, which test/outbox.test.ts covers');
  process.exit(0);
}

const tempDir = (t: Test): string => {
  const d = mkdtempSync(join(tmpdir(), 'qis-lock-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
};

function stopAtEnd(t: Test, c: ChildProcess): void {
  t.teardown(() => {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
}

/** Start time in clock ticks since boot, read here independently of src/durable.ts. */
function startTicks(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const after = stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/); // fields 3…
  return after[22 - 3]!;
}
const BOOT = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const codeOf = (e: unknown): unknown => (e as { code?: unknown } | undefined)?.code;

t.test('lock - a stale lock whose pid now belongs to another live process is taken over', async (t) => {
  const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
  stopAtEnd(t, sleeper);
  const pid = sleeper.pid!;
  const start = startTicks(pid);
  const otherBoot = BOOT.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  for (const [what, text] of [
    ['another start time, same boot', `${pid} ${BigInt(start) + 1n} ${BOOT}\n`],
    ['the same start ticks in an earlier boot', `${pid} ${start} ${otherBoot}\n`],
  ] as const) {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'lock'), text);
    const release = await lockDir(dir).catch((e: unknown) => e);
    t.type(release, 'function', `${what}: taken over (got ${String(codeOf(release))})`);
    t.equal(readFileSync(join(dir, 'lock'), 'utf8').split(' ')[0], String(process.pid), `${what}: the lock is ours`);
    if (typeof release === 'function') await (release as () => Promise<void>)();
    t.notOk(existsSync(join(dir, 'lock')), `${what}: released`);
  }
  t.equal(sleeper.exitCode, null, 'the process that got the pid was left alone');
  // The same pid with its real start time and this boot is that process's own lock: refused.
  const dir = tempDir(t);
  writeFileSync(join(dir, 'lock'), `${pid} ${start} ${BOOT}\n`);
  await t.rejects(lockDir(dir), { code: 'ERR_DATA_DIR_LOCKED' }, 'a lock matching the live process is kept');
  t.equal(readFileSync(join(dir, 'lock'), 'utf8'), `${pid} ${start} ${BOOT}\n`, 'and left alone');
});

t.test('lock - a live holder in another process refuses with ERR_DATA_DIR_LOCKED until it dies', async (t) => {
  const dir = tempDir(t);
  const holder = spawn(process.execPath, ['--input-type=module', '-e', `
    const { lockDir } = await import(${JSON.stringify(join(ROOT, 'dist/src/index.js'))});
    await lockDir(process.argv[1]);
    process.stdout.write('locked\\n');
    setInterval(() => {}, 60_000);`, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  stopAtEnd(t, holder);
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.on('data', (b: Buffer) => b.toString().includes('locked') && resolve());
    holder.on('exit', (code) => reject(new Error(`holder exited ${code}`)));
  });
  const text = readFileSync(join(dir, 'lock'), 'utf8');
  t.equal(text, `${holder.pid} ${startTicks(holder.pid!)} ${BOOT}\n`, 'the lock names pid, start time and boot id');
  const e = await lockDir(dir).then(() => undefined, (err: unknown) => err);
  t.equal(codeOf(e), 'ERR_DATA_DIR_LOCKED');
  t.match(String((e as Error).message), String(holder.pid), 'the message names the holder');
  holder.kill('SIGKILL');
  await new Promise((r) => holder.once('exit', r));
  const release = await lockDir(dir);
  t.equal(readFileSync(join(dir, 'lock'), 'utf8').split(' ')[0], String(process.pid), 'a kill -9 holder\'s lock is taken over');
  await release();
});

t.test('lock - the broker store\'s lock: taken over when its pid went to another process, kept while its owner runs', async (t) => {
  const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
  stopAtEnd(t, sleeper);
  const pid = sleeper.pid!;
  const dir = tempDir(t);
  const lock = join(dir, STORE_FILES.lock);
  writeFileSync(lock, `${pid} ${BigInt(startTicks(pid)) + 1n} ${BOOT}\n`);
  const store = await openStore({ dir, fsync: 'never' });
  t.equal(readFileSync(lock, 'utf8').split(' ')[0], String(process.pid), 'a reused pid does not keep the broker down');
  await store[Symbol.asyncDispose]();
  writeFileSync(lock, `${pid} ${startTicks(pid)} ${BOOT}\n`);
  await t.rejects(openStore({ dir, fsync: 'never' }), { code: 'ERR_FILE_IO', message: new RegExp(`in use by process ${pid}`) }, 'its live owner keeps it');
});

t.test('lock - a garbled lock is taken over after one wait whatever its mtime says (clock steps)', async (t) => {
  // A Pi without a real-time clock boots in the past and steps forward at NTP sync (or back):
  // a lock file left by a crash between create and write can carry an mtime a year away from
  // the process's clock. The wait for a concurrent writer must not be measured against it.
  const { utimesSync } = await import('node:fs');
  for (const yearsAway of [+1, -1]) {
    const dir = tempDir(t);
    const lock = join(dir, 'lock');
    writeFileSync(lock, '');
    const at = new Date(Date.now() + yearsAway * 365 * 86_400_000);
    utimesSync(lock, at, at);
    const release = await lockDir(dir);
    t.equal(readFileSync(lock, 'utf8').split(/\s+/)[0], String(process.pid), `taken over (mtime ${yearsAway > 0 ? 'a year ahead' : 'a year behind'})`);
    await release();
    t.notOk(existsSync(lock), 'released');
  }
});
