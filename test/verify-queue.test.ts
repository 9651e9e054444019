// The verifier pool's waiting room (broker/verify-queue.ts): one lane per source, served round
// robin one job per turn or oldest first; a new lane joins behind the lanes already waiting; a
// bound per source.
import t from 'tap';
import { FairQueue } from '../broker/verify-queue.js';

const takeAll = <J>(q: FairQueue<J>): J[] => {
  const out: J[] = [];
  for (let j = q.take(); j !== undefined; j = q.take()) out.push(j);
  return out;
};

t.test('fair queue - round robin, one job per source per turn, each source in its own order', async (t) => {
  const q = new FairQueue<string>(100);
  for (const k of [1, 2, 3, 4]) q.push('a', `a${k}`);
  q.push('b', 'b1');
  q.push('c', 'c1');
  q.push('c', 'c2');
  t.equal(q.size, 7);
  t.equal(q.sources, 3);
  t.same(takeAll(q), ['a1', 'b1', 'c1', 'a2', 'c2', 'a3', 'a4']);
  t.equal(q.size, 0);
  t.equal(q.sources, 0, 'empty lanes are dropped (a disconnected client leaves nothing behind)');
});

t.test('fair queue - a source arriving mid-round waits for one job of each lane already waiting, not for their backlog', async (t) => {
  const q = new FairQueue<string>(100);
  for (let k = 1; k <= 50; k++) q.push('flood', `f${k}`);
  q.push('other', 'o1');
  t.same([q.take(), q.take(), q.take()], ['f1', 'o1', 'f2']);
  // other's lane emptied; the cursor is on flood again. New lanes join behind it, in arrival order.
  q.push('quiet', 'q1');
  q.push('other', 'o2');
  t.same([q.take(), q.take(), q.take(), q.take()], ['f3', 'q1', 'o2', 'f4']);
  t.equal(q.peek(), 'f5');
  t.equal(takeAll(q).length, 46);
});

t.test('fair queue - oldest first across sources, without moving the round-robin turn', async (t) => {
  const q = new FairQueue<string>(100);
  for (const [src, j] of [['a', 'a1'], ['b', 'b1'], ['a', 'a2'], ['c', 'c1'], ['b', 'b2'], ['a', 'a3']] as const) q.push(src, j);
  t.equal(q.peekOldest(), 'a1');
  t.same([q.takeOldest(), q.takeOldest(), q.takeOldest()], ['a1', 'b1', 'a2']);
  t.same([q.take(), q.take()], ['a3', 'b2'], 'the turn still starts at a');
  t.same([q.takeOldest(), q.takeOldest()], ['c1', undefined]);
  t.equal(q.sources, 0);
});

t.test('fair queue - at most perSource jobs waiting per source; a refused push queues nothing', async (t) => {
  const q = new FairQueue<number>(2);
  t.same([q.push('a', 1), q.push('a', 2), q.push('a', 3), q.push('b', 4)], [true, true, false, true]);
  t.equal(q.waiting('a'), 2);
  t.equal(q.take(), 1);
  t.ok(q.push('a', 5), 'room again after a take');
  t.same(q.drain(), [4, 2, 5]);
  t.equal(q.size, 0);
  t.ok(new FairQueue<number>(0).push('x', 1) === false, 'a bound of 0 refuses every job');
});

t.test('fair queue - a long lane is compacted without losing or reordering jobs', async (t) => {
  const q = new FairQueue<number>(10_000);
  for (let k = 0; k < 5000; k++) q.push('a', k);
  const got: number[] = [];
  for (let k = 0; k < 3000; k++) got.push(q.take() as number);
  for (let k = 5000; k < 6000; k++) q.push('a', k);
  got.push(...takeAll(q));
  t.same(got, Array.from({ length: 6000 }, (_, k) => k));
});
