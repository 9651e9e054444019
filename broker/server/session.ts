/**
 * Session Present (MQTT 3.1.1 [MQTT-3.2.2-2], [MQTT-3.2.2-3]): a CONNECT with clean session 0
 * gets Session Present 1 when the broker holds a session for its client id, even one without
 * subscriptions. Aedes decides from the stored subscriptions alone (handlers/connect.js
 * `restoreSubs`: `sessionPresent = !!subs`), so a session that only exists answers 0 there.
 *
 * The hook is the smallest one Aedes leaves: its persistence tells it a client's subscriptions at
 * CONNECT (`subscriptionsByClient`, called for clean 0 only, after authentication succeeded) and
 * forgets them (`cleanSubscriptions`, clean 1 only). This module remembers which client ids hold a
 * session, and for one without subscriptions hands Aedes a single marker subscription; Aedes then
 * sets Session Present 1 and restores the marker through `authorizeSubscribe`, where this module
 * negates it (nothing is subscribed, nothing counted). The marker is recognised by identity, so
 * no client's own filter can pass for it.
 */
import type { AedesOptions, Client } from 'aedes';

/** Client ids whose empty session is remembered; past this the least recently connected is forgotten (its next CONNECT gets Session Present 0, as for a discarded session). */
export const SESSIONS_KEPT = 100_000;

interface Subscription {
  readonly topic: string;
  readonly qos: number;
}

/** The parts of an Aedes persistence this module wraps. */
export interface SessionPersistence {
  subscriptionsByClient(client: { id: string }): Promise<Subscription[]>;
  cleanSubscriptions(client: Client): Promise<unknown>;
}

export class SessionBook {
  /** Insertion order = last connect order: the first key is the one forgotten first. */
  readonly #held = new Map<string, true>();
  readonly #markers = new WeakSet<object>();
  constructor(private readonly max = SESSIONS_KEPT) {}

  /** Whether a session is held for `clientId` (clean 0 before, no clean 1 since). */
  holds(clientId: string): boolean {
    return this.#held.has(clientId);
  }

  get size(): number {
    return this.#held.size;
  }

  #keep(clientId: string): void {
    this.#held.delete(clientId);
    this.#held.set(clientId, true);
    if (this.#held.size > this.max) {
      const oldest = this.#held.keys().next();
      if (!oldest.done) this.#held.delete(oldest.value);
    }
  }

  /** Wraps `persistence` in place (Aedes keeps the object it was given). */
  persistence<P extends object>(persistence: P): P {
    const p = persistence as P & SessionPersistence;
    const byClient = p.subscriptionsByClient.bind(p);
    const clean = p.cleanSubscriptions.bind(p);
    p.subscriptionsByClient = async (client) => {
      const subs = await byClient(client);
      const held = this.holds(client.id);
      this.#keep(client.id);
      if (subs.length > 0 || !held) return subs;
      const marker = { topic: '$qis/session', qos: 0 };
      this.#markers.add(marker);
      return [marker];
    };
    p.cleanSubscriptions = (client) => {
      this.#held.delete(client.id);
      return clean(client);
    };
    return p;
  }

  /** Wraps `authorizeSubscribe`: the marker is negated before the ACL sees it. */
  authorizeSubscribe(inner: NonNullable<AedesOptions['authorizeSubscribe']>): NonNullable<AedesOptions['authorizeSubscribe']> {
    return (client, sub, cb) => (this.#markers.has(sub) ? cb(null, null) : inner(client, sub, cb));
  }
}
