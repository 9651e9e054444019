// Federation (issue 5): regions linked over real MQTT on loopback, real brokers, real stores.
import t from 'tap';
import { peer, freePort, startRegion, until, digestOf, packetOf, publishAll } from './helpers/federation.js';

t.test('federation - two regions: a packet published at A reaches B and back', async (t) => {
  const [pa, pb] = [await freePort(), await freePort()];
  const b = await startRegion('b', pb, []);
  const a = await startRegion('a', pa, [peer(pb)]);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  await until(() => a.broker.federation?.status()[0]?.catchUps === 1, 'first catch-up');
  await publishAll(a.url, [packetOf(1, 1, 1)]);
  await until(() => b.broker.store.size === 1, 'B has the packet');
  await publishAll(b.url, [packetOf(2, 1, 1)]);
  await until(() => a.broker.store.size === 2, 'A has B\'s packet');
  await until(() => digestOf(a) === digestOf(b), 'stores agree');
  t.pass('converged');
});
