// Issue 13, row 1: clients SUBSCRIBE qis/1/o/# on a broker holding many packets and hang up at
// once. Before the fix the retained stream kept reading the store for each dead client (RSS grew
// by tens of MB/s). The broker runs as its own process (`qis broker` from dist/, store filled
// beforehand) and its RSS is read from outside, in /proc/<pid>/status; a well-behaved client's
// publish + read-back is timed during and after the attack. Also: SIGTERM exits within
// limits.shutdownGraceMs (+ margin), with its log line, while clients keep the broker busy.
import t from 'tap';
import { cpuMs, rssBytes, roundTripMs, sleep, startQisProc, subscribeAndHangUp, rawClient, connectPacket, subscribePacket, type RawClient } from '../bench/hostile-kit.js';

const PACKETS = 20_000;
const MB = 1024 * 1024;

t.test('clients that SUBSCRIBE qis/1/o/# and hang up at once: RSS stays bounded, a good client is served', async (t) => {
  const b = await startQisProc({ fill: PACKETS });
  t.teardown(() => b.stop());
  // Warm-up: one whole retained stream read by a live client, so the baseline holds what any
  // reader of the store costs (slabs paged in, Aedes' buffers), not the first read's growth.
  await roundTripMs(b.url, 'warm');
  const baseline = rssBytes(b.pid);
  let peak = baseline;
  const sample = setInterval(() => (peak = Math.max(peak, rssBytes(b.pid))), 50);
  t.teardown(() => clearInterval(sample));
  const during: number[] = [];
  // 8 waves of 50 clients (the 20–100 at once): 400 dead subscribers × 20,000 packets.
  const attack = (async () => {
    for (let w = 0; w < 8; w++) await subscribeAndHangUp(b.port, 50, 'qis/1/o/#', `wave${w}`);
  })();
  let done = false;
  void attack.finally(() => (done = true));
  while (!done) {
    during.push(await roundTripMs(b.url, `during${during.length}`));
    await sleep(100);
  }
  await attack;
  // Every client has gone: a stream still feeding one shows as CPU the broker keeps spending
  // (before the fix: each dead stream walked all 20,000 packets, one 'connection closed' error
  // each; 0.5 s of CPU in these 2 s on a machine with load 17, the whole 2 s on an idle one).
  const cpu0 = cpuMs(b.pid);
  await sleep(2000);
  const cpuAfter = cpuMs(b.pid) - cpu0;
  const after = await roundTripMs(b.url, 'after');
  peak = Math.max(peak, rssBytes(b.pid));
  clearInterval(sample);
  const growth = peak - baseline;
  t.comment(`RSS baseline ${(baseline / MB).toFixed(0)} MB, peak ${(peak / MB).toFixed(0)} MB; round trips during ${during.map((x) => x.toFixed(0)).join(', ')} ms, after ${after.toFixed(0)} ms`);
  t.ok(cpuAfter < 300, `the broker spent ${cpuAfter} ms of CPU in the 2 s after the last client left (< 300 ms: no stream feeds a dead client)`);
  t.ok(growth < 300 * MB, `RSS grew by ${(growth / MB).toFixed(0)} MB (< 300 MB)`);
  t.ok(during.length > 0 && during.every((x) => x < 1000), 'publish + read-back under 1 s during the attack');
  t.ok(after < 1000, 'publish + read-back under 1 s after it');
});

t.test('SIGTERM exits within limits.shutdownGraceMs while clients hold the broker busy, with a log line', async (t) => {
  const grace = 2000;
  const b = await startQisProc({ fill: PACKETS, flags: ['--limits.shutdown-grace-ms', String(grace)] });
  t.teardown(() => b.stop(1000));
  // Busy: subscribers that never read (their streams fill the socket and wait), and a wave of
  // subscribers hanging up while the signal arrives.
  const stuck: RawClient[] = [];
  for (let i = 0; i < 20; i++) {
    const c = await rawClient(b.port);
    c.s.pause();
    c.s.write(Buffer.concat([connectPacket(`stuck-${i}`), subscribePacket('qis/1/o/#')]));
    stuck.push(c);
  }
  t.teardown(() => stuck.forEach((c) => c.s.destroy()));
  await sleep(300);
  const wave = subscribeAndHangUp(b.port, 50, 'qis/1/o/#', 'term').catch(() => undefined);
  const t0 = Date.now();
  process.kill(b.pid, 'SIGTERM');
  const code = await Promise.race([b.exited, sleep(grace + 3000).then(() => 'still running')]);
  const took = Date.now() - t0;
  await wave;
  t.not(code, 'still running', `exited ${took} ms after SIGTERM (grace ${grace} ms + 3 s margin)`);
  // Either the close finished (exit 0, "closed") or the grace period forced it (exit 1, logged).
  if (code === 0) t.match(b.output(), /"event":"closed","signal":"SIGTERM"/, 'a clean close is reported');
  else {
    t.equal(code, 1, 'a forced exit exits 1');
    t.match(b.output(), /broker did not close in time; exiting/, 'the forced exit is logged');
    t.ok(took >= grace - 100, 'forced only after the grace period');
  }
});
