// Reads one retained packet from a broker with a raw mqtt.js client (Aedes streams retained
// messages asynchronously after SUBACK, so this waits for the message itself).
import mqtt, { type IClientOptions } from 'mqtt';

/** The retained packet on `topic`, or undefined when none arrives within `timeoutMs`. */
export async function readRetained(url: string, topic: string, timeoutMs = 3000): Promise<Uint8Array | undefined> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, clean: true });
  try {
    const got = new Promise<Uint8Array | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs);
      c.on('message', (tp, payload, packet) => {
        if (tp === topic && packet.retain) {
          clearTimeout(timer);
          resolve(new Uint8Array(payload));
        }
      });
    });
    await c.subscribeAsync(topic, { qos: 1 });
    return await got;
  } finally {
    await c.endAsync(true);
  }
}

/** Publishes once (QoS 1, retained) on a fresh connection (`options`: client id, login…): 'acked' on PUBACK, 'closed' when the broker disconnects (its way to refuse). */
export async function publishOnce(url: string, topic: string, payload: Uint8Array, options: IClientOptions = {}): Promise<'acked' | 'closed'> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 10_000, ...options });
  try {
    return await new Promise<'acked' | 'closed'>((resolve) => {
      c.once('close', () => resolve('closed'));
      c.publish(topic, Buffer.from(payload), { qos: 1, retain: true }, (err) => resolve(err ? 'closed' : 'acked'));
    });
  } finally {
    await c.endAsync(true);
  }
}
