/**
 * What kind of broker a client talks to, which decides how it knows a query's retained messages
 * are all in (PROTOCOL §7): shared by the node runtime (connection.ts) and the registry client
 * (registry-session.ts), with the SUBACK check both make.
 */
import type { MqttClient } from 'mqtt';
import { QisError } from '../protocol/errors.js';

/** How a broker orders a query's sync marker (PROTOCOL §7). */
export type BrokerKind = 'qis' | 'mosquitto' | 'unknown';

/** The retained topic where a qis broker says what it is (docs/protocol-choices.md). */
export const BROKER_INFO_TOPIC = 'qis/1/broker';
/** Mosquitto's retained version topic; an ACL may deny it, which only rules out recognising Mosquitto. */
export const MOSQUITTO_VERSION_TOPIC = '$SYS/broker/version';
/** How long a client waits for its broker-kind sync marker before treating the broker as unknown. */
export const DETECT_TIMEOUT_MS = 2_000;

/**
 * Watches what arrives before a broker-kind sync marker: a qis broker's `qis/1/broker`, Mosquitto's
 * version topic; whatever comes after the marker no longer counts.
 */
export function kindObserver(sync: string): { observe(topic: string, payload: Uint8Array): void; readonly synced: boolean; readonly kind: BrokerKind } {
  let kind: BrokerKind = 'unknown';
  let synced = false;
  return {
    observe(topic, payload) {
      if (topic === sync) synced = true;
      else if (synced) return;
      else if (topic === BROKER_INFO_TOPIC) kind = 'qis';
      else if (topic === MOSQUITTO_VERSION_TOPIC && kind === 'unknown' && Buffer.from(payload).toString('utf8').startsWith('mosquitto')) kind = 'mosquitto';
    },
    get synced() {
      return synced;
    },
    get kind() {
      return kind;
    },
  };
}

/**
 * One SUBSCRIBE; a refused filter (SUBACK 0x80) is ERR_SUBSCRIBE_DENIED naming it. Filters in
 * `mayBeDenied` may be refused without error (an ACL denying $SYS only rules out recognising
 * Mosquitto).
 * @throws QisError ERR_SUBSCRIBE_DENIED; whatever mqtt.js rejects with otherwise
 */
export async function subscribeChecked(client: MqttClient, filters: readonly string[], qos: 0 | 1, mayBeDenied: readonly string[] = []): Promise<void> {
  let granted: { topic: string; qos: number }[];
  try {
    granted = await client.subscribeAsync(Object.fromEntries(filters.map((f) => [f, { qos }])));
  } catch (e) {
    // mqtt.js 5 turns a SUBACK failure code (0x80) into this error.
    if ((e as Error).message.startsWith('Subscribe error')) {
      throw new QisError('ERR_SUBSCRIBE_DENIED', `the broker refused a subscription to ${filters.join(', ')} (SUBACK 0x80)`, { cause: e });
    }
    throw e;
  }
  const denied = granted.filter((g) => g.qos === 128 && !mayBeDenied.includes(g.topic)).map((g) => g.topic);
  if (denied.length > 0) throw new QisError('ERR_SUBSCRIBE_DENIED', `the broker refused the subscription to ${denied.join(', ')} (SUBACK 0x80)`);
}
