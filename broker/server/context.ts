/**
 * What every part of the broker is handed: the options, the clock, the stores, the metrics, the
 * verifier, the template documents, the rate limiter and a way to publish. The hook modules next
 * to this file take it as their first argument instead of closing over the whole broker, so each
 * can be built and tested alone with a context of its own.
 */
import type { Aedes } from 'aedes';
import type { IPublishPacket, QoS } from 'mqtt-packet';
import type { Logger } from 'pino';
import type { NodeKey } from '../../src/index.js';
import type { RateLimiter } from '../admission.js';
import type { Federation } from '../federation.js';
import type { Metrics } from '../metrics.js';
import type { BrokerOptions } from '../options.js';
import type { Store } from '../store.js';
import type { Verifier } from '../verifier.js';
import type { Authenticator } from './auth.js';
import type { RevocationBook } from './revocation-book.js';
import type { Limits } from './limits.js';
import type { TemplateBook } from './template-book.js';

/** The PUBLISH Aedes hands to authorizePublish (mutable: admission rewrites topic and retain). */
export type AedesPublishPacket = IPublishPacket;
/** The callback of authorizePublish: an error refuses (and disconnects), null admits. */
export type Done = (e?: Error | null) => void;

/** Where a dropped (stale) publish is sent instead of its topic: nobody may subscribe here. */
export const DROP_TOPIC = '$qis/dropped';

/** A message the broker itself publishes (broker info, template documents, peers' packets, federation answers). */
export interface BrokerMessage {
  readonly topic: string;
  readonly payload: Buffer | string;
  readonly qos: QoS;
  readonly retain: boolean;
}

export interface BrokerContext {
  /** Replaced as a whole on reload (reload.ts: ACLs, auth, operators, log level): read it at use, do not keep parts. */
  options: BrokerOptions;
  /** Clock, Unix ms. */
  readonly now: () => number;
  readonly logger: Logger;
  /** Outcome packets (PROTOCOL §6). */
  readonly store: Store;
  /** Score packets (PROTOCOL §9), one per (template, node). */
  readonly scoreStore: Store;
  readonly metrics: Metrics;
  readonly verifier: Verifier;
  readonly templates: TemplateBook;
  /** Who each client is (connect.ts), for the ACL's `users` and `%u`. */
  readonly auth: Authenticator;
  /** Operators' revocation lists (PROTOCOL §10). */
  readonly revocations: RevocationBook;
  /** Per-client publish rate (PROTOCOL §6), shared by single publishes and federation batches. */
  readonly rate: RateLimiter;
  /** The connection, packet, subscription and retained limits (limits.ts). */
  readonly limits: Limits;
  /** Publishes through Aedes to local subscribers; rejects with Aedes' error. */
  publish(m: BrokerMessage): Promise<void>;
  /** This broker's own key (with `federation` set): its links log in with it (PROTOCOL §11), qis/1/broker names its id. */
  readonly brokerKey?: NodeKey;
  /** The links to other regions, once started (undefined without federation). */
  federation: Federation | undefined;
}

/** `BrokerContext.publish` over an Aedes instance. */
export function publishOn(aedes: Aedes, m: BrokerMessage): Promise<void> {
  return new Promise((resolve, reject) =>
    aedes.publish({ cmd: 'publish', topic: m.topic, payload: m.payload, qos: m.qos, retain: m.retain, dup: false } as Parameters<Aedes['publish']>[0], (e) => (e ? reject(e) : resolve())),
  );
}
