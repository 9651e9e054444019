/** The state one link's parts share: link.ts owns it, outbox.ts, inbox.ts and catch-up.ts read it. */
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { PeerOptions } from '../options.js';
import type { FederationHost } from './common.js';
import type { FedMetrics } from './metrics.js';
import type { Requests } from './mqtt.js';

/** What the parts of one link (outbox.ts, inbox.ts, catch-up.ts) share; link.ts owns it and keeps the connection fields current. */
export interface LinkState {
  /** The peer's display name (metrics label, log field). */
  readonly name: string;
  readonly clientId: string;
  readonly peer: PeerOptions;
  readonly host: FederationHost;
  readonly m: FedMetrics;
  readonly log: Logger;
  readonly requests: Requests;
  /** The MQTT client of the current connection (undefined between connections). */
  client: MqttClient | undefined;
  connected: boolean;
  /** 'qis' (digest catch-up, batches), 'mqtt' (full retained exchange, single publishes), or unknown before the first connection. */
  peerKind: 'qis' | 'mqtt' | 'unknown';
  /** The peer's region, from its qis/1/broker (PROTOCOL §8: regions exchange names); undefined until known. */
  peerRegion: string | undefined;
}

/** How the outbox and inbox ask for a catch-up: now (a slow peer drained), or a little later (packets were dropped). */
export interface CatchUpTrigger {
  now(): void;
  soon(): void;
}
