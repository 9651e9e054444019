// Loading a broker with one exact cohort of distinct nodes (the 10,000-packet and kill -9 tests).
import mqtt from 'mqtt';
import { createOutcomePacket, keyFromSeed } from '../../src/index.js';
import { SIT, seed } from './federation.js';
import { bearing } from './fixtures.js';

export { SIT } from './federation.js';

/** n packets of n distinct nodes in one exact cohort. */
export function cohort(n: number, salt: number): { topic: string; packet: Uint8Array }[] {
  const ts = Date.now();
  return Array.from({ length: n }, (_, i) => {
    const { topic, packet } = createOutcomePacket({ key: keyFromSeed(seed(i, salt)), template: bearing, situation: SIT, outcome: i % 3 ? 'no_failure' : 'failure', seq: 1, ts });
    return { topic, packet };
  });
}

/** Publishes all, pipelined at QoS 1, and resolves when every PUBACK arrived. */
export async function publishAll(url: string, packets: readonly { topic: string; packet: Uint8Array }[]): Promise<void> {
  const c = await mqtt.connectAsync(url, { clientId: `loader-${process.pid}-${Date.now()}`, reconnectPeriod: 0 });
  try {
    await Promise.all(packets.map((p) => c.publishAsync(p.topic, Buffer.from(p.packet), { qos: 1, retain: true })));
  } finally {
    await c.endAsync();
  }
}
