/**
 * Subscriptions and the sync hold (PROTOCOL §7): a client's sync marker is delivered only after
 * the retained messages of its earlier SUBSCRIBEs have all been written to it, so a node that
 * sees its marker knows its cohort is complete.
 *
 * `authorizeSubscribe` counts each granted filter as pending; Aedes' 'subscribe' event tells
 * which SUBSCRIBE the next retained stream belongs to (`takeSubscribe`, see retained.ts), whose
 * end releases the count; a sync marker published meanwhile waits in `whenRetainedWritten`.
 */
import type { AedesOptions, Client, Subscription } from 'aedes';
import type { Logger } from 'pino';
import { aclAllowsForward, aclAllowsSubscribe, namesOthersSync } from '../admission.js';
import type { BrokerContext } from './context.js';
import { peerGate } from './peer-gate.js';

/** Longest a sync marker is held waiting for retained delivery (a safety net; normally ms). */
export const SYNC_HOLD_LIMIT_MS = 30_000;

/** The SUBSCRIBE Aedes is completing: its client, how many grants, and the QoS granted per filter. */
export interface PendingSubscribe {
  readonly client: Client;
  readonly n: number;
  readonly qos: Map<string, number>;
}

interface SyncState {
  /** Subscriptions whose retained messages are not yet all written to the client. */
  pending: number;
  waiters: (() => void)[];
}

export class SyncHold {
  readonly #syncs = new WeakMap<Client, SyncState>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #last: PendingSubscribe | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly limitMs = SYNC_HOLD_LIMIT_MS,
  ) {}

  #state(client: Client): SyncState {
    let s = this.#syncs.get(client);
    if (!s) this.#syncs.set(client, (s = { pending: 0, waiters: [] }));
    return s;
  }

  /** A filter granted to a connected client: its retained messages are now owed. */
  granted(client: Client): void {
    this.#state(client).pending++;
  }

  /** Aedes' 'subscribe' event: the grants of the SUBSCRIBE whose retained stream comes next. */
  subscribed(subs: readonly Subscription[], client: Client): void {
    const n = subs.filter((s) => (s.qos as number) !== 128).length;
    if (n > 0) this.#last = { client, n, qos: new Map(subs.map((x) => [x.topic, x.qos as number])) };
  }

  /** The SUBSCRIBE being completed (once: the next retained stream is another's). */
  takeSubscribe(): PendingSubscribe | undefined {
    const s = this.#last;
    this.#last = undefined;
    return s;
  }

  /** `n` subscriptions' retained messages are written; held markers go when none is left. */
  release(client: Client, n: number): void {
    const s = this.#state(client);
    s.pending = Math.max(0, s.pending - n);
    if (s.pending === 0) for (const w of s.waiters.splice(0)) w();
  }

  /** Calls `done` once every retained message owed to `client` is written. */
  whenRetainedWritten(client: Client, done: () => void): void {
    const s = this.#state(client);
    if (s.pending === 0) return done();
    let fired = false;
    const once = (): void => {
      if (fired) return;
      fired = true;
      clearTimeout(timer);
      done();
    };
    // Releasing the marker early would make the client believe an incomplete cohort is complete;
    // past the limit the client is disconnected instead, and its query starts again.
    const timer = setTimeout(() => {
      fired = true;
      this.#timers.delete(timer);
      this.logger.warn({ clientId: client.id }, 'retained delivery took longer than the sync hold limit; client disconnected');
      client.close();
    }, this.limitMs);
    timer.unref();
    this.#timers.add(timer);
    s.waiters.push(() => {
      this.#timers.delete(timer);
      once();
    });
  }

  /** Stops every hold timer (the broker is closing). */
  close(): void {
    for (const t of this.#timers) clearTimeout(t);
  }
}

/** The ACL applies to every filter (cohorts included: an operator may keep them to some clients); `$qis` is internal and never granted. */
export function authorizeSubscribe(ctx: BrokerContext, hold: SyncHold): NonNullable<AedesOptions['authorizeSubscribe']> {
  return (client, sub, cb) => {
    const topic = sub.topic;
    // qis/1/f/ (federation answers) only for configured peers (peer-gate.ts); sync topics only for their own client (PROTOCOL §7).
    const denied = topic.startsWith('$qis') || namesOthersSync(topic, client.id) || (topic.startsWith('qis/1/f/') && !peerGate(ctx).allows(client)) || !aclAllowsSubscribe(ctx.options.acl.subscribe, topic, client.id, ctx.auth.user(client));
    if (denied) {
      ctx.metrics.refused.inc({ code: 'ERR_NOT_AUTHORIZED' });
      ctx.logger.info({ code: 'ERR_NOT_AUTHORIZED', clientId: client.id, topic }, 'subscription denied (SUBACK 0x80)');
      return cb(null, null);
    }
    if (ctx.limits.subscription(client, topic).action === 'refuse') return cb(null, null);
    // Counted until its retained messages are written; restored subscriptions get none.
    if ((client as Client & { connackSent?: boolean }).connackSent) hold.granted(client);
    cb(null, sub);
  };
}

/** What a granted wildcard filter may not carry to `client` (the subscribe ACL's denied topics, others' sync markers); forward.ts applies it. */
export function forwardAllowed(ctx: BrokerContext, client: Client, topic: string): boolean {
  return aclAllowsForward(ctx.options.acl.subscribe, topic, client.id, ctx.auth.user(client));
}
