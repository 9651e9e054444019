// Federated qis brokers for tests: each region in-process on a fixed free loopback port (so the
// peers of a ring can be named before they start), with its own temp data directory.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { createBroker, type QisBroker } from '../../broker/server.js';
import type { BrokerConfig, PeerOptions } from '../../broker/options.js';
import { storeDigest } from '../../broker/federation.js';
import { createOutcomePacket, keyFromSeed, saveKeyFile, type NodeKey, type Situation } from '../../src/index.js';
import { bearing } from './fixtures.js';
import { freePort } from './mosquitto.js';

export { freePort };

export interface Region {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly dataDir: string;
  broker: QisBroker;
  /** Stops the broker, keeping its data directory. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>;
  close(): Promise<void>;
}

export const peer = (port: number, extra: Partial<PeerOptions> = {}): PeerOptions => ({ url: `mqtt://127.0.0.1:${port}`, share: ['*'], accept: ['*'], rateLimit: 0, ...extra });

/** More for one region: its broker key (saved as broker-key.json before the start), other config keys, a clock. */
export interface RegionExtra {
  readonly key?: NodeKey;
  readonly config?: Omit<BrokerConfig, 'listeners' | 'dataDir' | 'federation'>;
  readonly now?: () => number;
}

export async function startRegion(name: string, port: number, peers: PeerOptions[], dir?: string, fed: { followUpMs?: number; putTimeoutMs?: number } = {}, extra: RegionExtra = {}): Promise<Region> {
  const dataDir = dir ?? mkdtempSync(join(tmpdir(), `qis-fed-${name}-`));
  if (extra.key && !existsSync(join(dataDir, 'broker-key.json'))) await saveKeyFile(join(dataDir, 'broker-key.json'), extra.key);
  const make = (): Promise<QisBroker> =>
    createBroker(
      {
        listeners: [{ type: 'tcp', host: '127.0.0.1', port }],
        dataDir,
        verifyWorkers: 0,
        fsync: 'never',
        ...extra.config,
        federation: { region: name, peers, reconnect: { baseMs: 100, capMs: 1000 }, linksFrom: ['127.0.0.1', '::1'], ...fed },
      },
      { logger: pino({ level: process.env['QIS_TEST_LOG'] ?? 'silent' }), ...(extra.now ? { now: extra.now } : {}) },
    );
  const r: Region = {
    name,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    dataDir,
    broker: await make(),
    async stop() {
      await r.broker.close();
    },
    async start() {
      r.broker = await make();
    },
    async close() {
      await r.broker.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return r;
}

/** Waits until `cond()` holds, polling; fails with `what` after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const digestOf = (r: Region): string => storeDigest(r.broker.store);

export function seed(i: number, salt: number): Uint8Array {
  const s = new Uint8Array(32);
  const v = new DataView(s.buffer);
  v.setUint32(0, salt);
  v.setUint32(4, i);
  return s;
}

export const SIT: Situation = { machine_model: 'KX-200', bearing_type: 'roller', load_kn: 42.5, sealed: true };

/** A signed packet (or tombstone) of node (salt, i). */
export function packetOf(i: number, salt: number, seq: number, opts: { del?: boolean; situation?: Situation } = {}): { topic: string; packet: Uint8Array } {
  const { topic, packet } = createOutcomePacket({ key: keyFromSeed(seed(i, salt)), template: bearing, situation: opts.situation ?? SIT, outcome: i % 3 ? 'no_failure' : 'failure', seq, ts: Date.now(), ...(opts.del ? { del: true } : {}) });
  return { topic, packet };
}

/** Publishes all at QoS 1 (retained) as an ordinary client and resolves when every PUBACK arrived. */
export async function publishAll(url: string, packets: readonly { topic: string; packet: Uint8Array }[]): Promise<void> {
  const c = await mqtt.connectAsync(url, { clientId: `loader-${process.pid}-${Math.random().toString(36).slice(2)}`, reconnectPeriod: 0 });
  try {
    await Promise.all(packets.map((p) => c.publishAsync(p.topic, Buffer.from(p.packet), { qos: 1, retain: true })));
  } finally {
    await c.endAsync();
  }
}
