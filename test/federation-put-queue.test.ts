// The `put` batches of one federation link (broker/server/link-queue.ts): admitted in arrival
// order, two at once; a batch with a template document or revocation list (a barrier) runs alone,
// after every earlier batch and before every later one; bounded per link. Pure logic: the jobs
// are promises the test settles.
import t from 'tap';
import { LINK_PUTS_ADMITTING, LINK_PUTS_QUEUED, LinkPutQueue } from '../broker/server/link-queue.js';

/** A job the test ends: `started` says whether the queue ran it, `end()` settles it. */
function job(log: string[], name: string) {
  let end!: () => void;
  let fail!: (e: Error) => void;
  const j = {
    started: false,
    run: () => {
      j.started = true;
      log.push(`start ${name}`);
      return new Promise<string>((resolve, reject) => {
        end = () => {
          log.push(`end ${name}`);
          resolve(name);
        };
        fail = reject;
      });
    },
    end: () => end(),
    fail: (e: Error) => fail(e),
  };
  return j;
}
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('two batches of a link are admitted at once, the third waits for one of them; links are independent', async (t) => {
  t.equal(LINK_PUTS_ADMITTING, 2);
  const q = new LinkPutQueue();
  const log: string[] = [];
  const [a, b, c] = ['a', 'b', 'c'].map((n) => job(log, n)) as [ReturnType<typeof job>, ReturnType<typeof job>, ReturnType<typeof job>];
  const other = job(log, 'other');
  const ra = q.queue('l1', a.run);
  q.queue('l1', b.run);
  const rc = q.queue('l1', c.run);
  q.queue('l2', other.run);
  await tick();
  t.ok(a.started && b.started, 'the first two run together');
  t.notOk(c.started, 'the third waits');
  t.ok(other.started, 'another link does not wait for this one');
  b.end();
  await tick();
  t.ok(c.started, 'the third starts when one of the two ended');
  a.end();
  c.end();
  other.end();
  t.equal(await ra, 'a', "a batch's result is its job's");
  t.equal(await rc, 'c');
  await tick();
  t.equal(q.size('l1'), 0, 'nothing left of the link');
});

t.test('a barrier batch (template document, revocation list) runs alone: after every earlier batch, before every later one', async (t) => {
  const q = new LinkPutQueue();
  const log: string[] = [];
  const [a, doc, b, c] = ['a', 'doc', 'b', 'c'].map((n) => job(log, n)) as ReturnType<typeof job>[] as [ReturnType<typeof job>, ReturnType<typeof job>, ReturnType<typeof job>, ReturnType<typeof job>];
  q.queue('l', a.run);
  q.queue('l', doc.run, true);
  q.queue('l', b.run);
  q.queue('l', c.run);
  await tick();
  t.ok(a.started, 'the batch before the barrier runs');
  t.notOk(doc.started, 'the barrier waits for it');
  t.notOk(b.started, 'and a later batch does not overtake the barrier');
  a.end();
  await tick();
  t.ok(doc.started, 'the barrier runs once the earlier batch ended');
  t.notOk(b.started, 'alone');
  doc.end();
  await tick();
  t.ok(b.started && c.started, 'then the later batches, two at once');
  b.end();
  c.end();
  await tick();
  t.same(log.slice(0, 4), ['start a', 'end a', 'start doc', 'end doc'], 'in that order');
});

t.test('a failing batch frees its place; past LINK_PUTS_QUEUED batches of a link the queue refuses more', async (t) => {
  const q = new LinkPutQueue();
  const log: string[] = [];
  const jobs = Array.from({ length: LINK_PUTS_QUEUED }, (_, i) => job(log, String(i)));
  const runs = jobs.map((j) => q.queue('l', j.run));
  t.ok(runs.every((r) => r !== undefined), `${LINK_PUTS_QUEUED} batches taken`);
  t.equal(q.queue('l', job(log, 'x').run), undefined, 'one more is refused');
  t.equal(q.size('l'), LINK_PUTS_QUEUED);
  await tick();
  const first = jobs[0] as ReturnType<typeof job>;
  first.fail(new Error('boom'));
  await t.rejects(runs[0] as Promise<string>, /boom/, "the failure reaches the batch's caller");
  await tick();
  t.ok((jobs[2] as ReturnType<typeof job>).started, 'and the next waiting batch starts');
  t.not(q.queue('l', job(log, 'y').run), undefined, 'a place is free again');
  const thrower = new LinkPutQueue();
  await t.rejects(
    thrower.queue('l', () => {
      throw new Error('sync');
    }) as Promise<unknown>,
    /sync/,
    'a job that throws at once rejects too',
  );
  await tick();
  t.equal(thrower.size('l'), 0, 'and frees its place');
  for (const j of jobs.slice(1)) if (j.started) j.end();
});
