// Parts of broker/server/ alone, without a broker: the HTTP route table and the sync hold
// (PROTOCOL §7). The whole broker is driven over real sockets in broker.test.ts.
import t from 'tap';
import type { Client } from 'aedes';
import { pino } from 'pino';
import { routeOf, type Route } from '../broker/server/http.js';
import { SyncHold } from '../broker/server/subscribe.js';

const route = (): Route => () => undefined;

t.test('http routes - exact paths first, then the longest prefix ending in *', async (t) => {
  const health = route();
  const all = route();
  const files = route();
  const table = { '/healthz': health, '/*': all, '/console/*': files };
  t.equal(routeOf(table, '/healthz'), health, 'an exact path');
  t.equal(routeOf(table, '/console/app.js'), files, 'the longer prefix');
  t.equal(routeOf(table, '/other'), all, 'the shorter prefix');
  t.equal(routeOf({ '/healthz': health }, '/healthz/x'), undefined, 'an exact path serves nothing under it');
  t.equal(routeOf({ '/healthz': health }, 'constructor'), undefined, 'only the table’s own keys');
});

/** A stand-in for an Aedes client: the hold reads its id and may close it. */
function client(id: string): Client & { closed: boolean } {
  const c = { id, closed: false, close: () => void (c.closed = true) };
  return c as unknown as Client & { closed: boolean };
}

t.test('sync hold - a marker waits until every granted subscription’s retained messages are written', async (t) => {
  const hold = new SyncHold(pino({ level: 'silent' }));
  t.teardown(() => hold.close());
  const c = client('a');
  let released = 0;
  hold.whenRetainedWritten(c, () => released++);
  t.equal(released, 1, 'nothing owed: at once');
  hold.granted(c);
  hold.granted(c);
  hold.whenRetainedWritten(c, () => released++);
  hold.release(c, 1);
  t.equal(released, 1, 'one subscription still owed: held');
  hold.release(c, 1);
  t.equal(released, 2, 'all written: released');
  hold.release(c, 5);
  hold.whenRetainedWritten(c, () => released++);
  t.equal(released, 3, 'extra releases do not go below zero');
});

t.test('sync hold - past the limit the client is disconnected and the marker never released', async (t) => {
  const hold = new SyncHold(pino({ level: 'silent' }), 10);
  t.teardown(() => hold.close());
  const c = client('b');
  hold.granted(c);
  let released = false;
  hold.whenRetainedWritten(c, () => (released = true));
  await new Promise((r) => setTimeout(r, 50));
  t.ok(c.closed, 'disconnected');
  hold.release(c, 1);
  t.notOk(released, 'a late release does not deliver the marker');
});

t.test('sync hold - each SUBSCRIBE’s grants are taken once, by the retained stream that follows', async (t) => {
  const hold = new SyncHold(pino({ level: 'silent' }));
  const c = client('c');
  hold.subscribed([{ topic: 'x/#', qos: 1 }, { topic: 'y', qos: 128 as 0 }], c);
  const s = hold.takeSubscribe();
  t.equal(s?.n, 1, 'a refused filter (0x80) is not owed');
  t.equal(s?.qos.get('x/#'), 1, 'the QoS granted per filter');
  t.equal(hold.takeSubscribe(), undefined, 'taken once');
  hold.subscribed([{ topic: 'z', qos: 128 as 0 }], c);
  t.equal(hold.takeSubscribe(), undefined, 'a SUBSCRIBE with nothing granted owes nothing');
});
