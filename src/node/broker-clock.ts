/**
 * Why a broker refused a packet, as far as a client can tell. Over MQTT 3.1.1 a refusal is only a
 * closed connection; the commonest cause in the field is a clock far from the broker's
 * (ERR_TS_FUTURE), and that one is detectable: a qis broker keeps `qis/1/broker` retained with its
 * own `time`, rewritten every few seconds (broker/server/info.ts).
 */
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { QisError } from '../protocol/errors.js';
import { BROKER_INFO_TOPIC } from './broker-kind.js';
import { tlsClientOptions, type TlsOptions } from './tls.js';

/** A packet ts this far ahead of the broker's clock is the likely reason for a refusal. */
export const CLOCK_SUSPECT_MS = 60_000;

export interface ProbeOptions {
  readonly url: string;
  readonly tls?: TlsOptions;
  readonly username?: string;
  readonly password?: string;
  /** Give up after this long (default 3000 ms). */
  readonly timeoutMs?: number;
}

/** The `time` (Unix ms) in a qis/1/broker payload, if it holds one. */
export function brokerInfoTime(payload: Uint8Array): number | undefined {
  try {
    const info = JSON.parse(Buffer.from(payload).toString('utf8')) as { time?: unknown };
    return typeof info.time === 'number' && Number.isSafeInteger(info.time) ? info.time : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The broker's clock as its retained `qis/1/broker` says (undefined: not a qis broker, an older
 * one, or no answer in time). Its own short connection, apart from a node's outbox traffic, which
 * the broker may be closing on every refused packet. Never rejects.
 */
export function probeBrokerTime(o: ProbeOptions): Promise<number | undefined> {
  return new Promise((resolve) => {
    let client: mqtt.MqttClient;
    const done = (t: number | undefined): void => {
      clearTimeout(timer);
      client?.end(true);
      resolve(t);
    };
    const timer = setTimeout(() => done(undefined), o.timeoutMs ?? 3_000);
    try {
      client = mqtt.connect(o.url, {
        clientId: `qis-clock-${randomBytes(6).toString('hex')}`,
        protocolVersion: 4,
        clean: true,
        reconnectPeriod: 0,
        connectTimeout: o.timeoutMs ?? 3_000,
        ...(o.username !== undefined ? { username: o.username } : {}),
        ...(o.password !== undefined ? { password: o.password } : {}),
        ...tlsClientOptions(o.tls),
      });
    } catch {
      done(undefined);
      return;
    }
    client.on('error', () => done(undefined));
    client.on('close', () => done(undefined));
    client.on('message', (topic, payload) => {
      if (topic === BROKER_INFO_TOPIC) done(brokerInfoTime(payload));
    });
    client.on('connect', () => client.subscribe(BROKER_INFO_TOPIC, { qos: 0 }, (err) => err && done(undefined)));
  });
}

/** A person's sentence on why packets with these ts were likely refused, given the broker's time. */
export function likelyReason(packetTs: readonly number[], brokerTime: number | undefined): string {
  if (brokerTime === undefined) {
    return "the broker did not say its time (qis/1/broker); its log names the reason (a code such as ERR_TS_FUTURE, ERR_NOT_AUTHORIZED)";
  }
  const ahead = Math.max(...packetTs) - brokerTime;
  if (packetTs.length > 0 && ahead > CLOCK_SUSPECT_MS) {
    return `likely reason: the packet's ts is ${formatDuration(ahead)} ahead of the broker's clock (ERR_TS_FUTURE): this machine's clock is fast; set it right (NTP) and publish again`;
  }
  return "this machine's clock agrees with the broker's; the broker's log names the reason (its code)";
}

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/**
 * ERR_DELIVERY_REFUSED for packets the broker refused (`what` names them, `ts` are their
 * timestamps), with the likely reason found by asking the broker its time.
 */
export async function deliveryRefused(o: ProbeOptions, what: string, ts: readonly number[]): Promise<QisError> {
  const brokerTime = await probeBrokerTime(o);
  return new QisError('ERR_DELIVERY_REFUSED', `${what}; ${likelyReason(ts, brokerTime)}`);
}
