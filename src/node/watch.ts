/**
 * Watching a cohort: every verified packet (tombstones too) that arrives on its filter, on a
 * subscription kept across reconnects, through a bounded channel.
 */
import { foldCohort, topicMatches } from '../protocol/cohort.js';
import { isQisError, type ErrorCode } from '../protocol/errors.js';
import { address, cohortFilter, type Situation } from '../protocol/fingerprint.js';
import { checkPacket } from '../protocol/packet.js';
import type { Template } from '../protocol/template.js';
import { Channel } from './channel.js';
import type { Connection, Listener } from './connection.js';
import { checkWiden } from './options.js';
import type { WatchEvent, WatchIterator, WatchOptions } from './types.js';

/** Events a watch holds for a slow reader; older ones are dropped and counted beyond it. */
const WATCH_BUFFER = 10_000;

export class Watches {
  readonly #conn: Connection;
  readonly #watches = new Set<Channel<WatchEvent>>();

  constructor(conn: Connection) {
    this.#conn = conn;
  }

  watch(template: Template, situation: Situation, options: WatchOptions = {}): WatchIterator {
    const conn = this.#conn;
    conn.checkOpen();
    const widen = options.widen ?? 0;
    checkWiden(template, widen);
    const addr = address(template, situation);
    const filter = cohortFilter(addr, widen);
    const wantRetained = options.retained ?? true;
    const dropped: Partial<Record<ErrorCode, number>> = {};
    const listener: Listener = (topic, payload, retained) => {
      if (!topicMatches(filter, topic) || (retained && !wantRetained)) return;
      const fold = foldCohort([{ topic, payload }], { address: addr, widen, now: conn.now(), ...conn.backend() });
      const codes = Object.entries(fold.dropped) as [ErrorCode, number][];
      for (const [code, n] of codes) dropped[code] = (dropped[code] ?? 0) + n;
      if (codes.length > 0) return;
      // foldCohort keeps tombstones out of `packets`; re-check to hand the tombstone itself out.
      const r = checkPacket(topic, payload, { now: conn.now(), depth: addr.levels.length, ...conn.backend() });
      if (r.ok) ch.push({ packet: r.packet, retained });
    };
    const ch = new Channel<WatchEvent>(WATCH_BUFFER, () => {
      conn.listeners.delete(listener);
      this.#watches.delete(ch);
      const n = (conn.subs.get(filter) ?? 1) - 1;
      if (n > 0) conn.subs.set(filter, n);
      else {
        conn.subs.delete(filter);
        if (conn.client) conn.unsubscribe(conn.client, [filter]);
      }
    });
    this.#watches.add(ch);
    conn.listeners.add(listener);
    conn.subs.set(filter, (conn.subs.get(filter) ?? 0) + 1);
    if (conn.state === 'connected' && conn.client) {
      // A denied subscription ends the watch with its error; a connection lost meanwhile does
      // not (the filter is subscribed again on the next connection).
      conn.subscribe(conn.client, [filter]).catch((e: unknown) => {
        if (isQisError(e) && e.code === 'ERR_SUBSCRIBE_DENIED') ch.end(e);
      });
    }
    if (conn.o.failFast && conn.state !== 'connected') {
      // Interactive: the first failed attempt (refused port, unknown host, TLS) ends the watch
      // with its error; once connected, later losses reconnect as ever.
      conn.until(() => (conn.state === 'connected' ? true : undefined), { signal: options.signal, what: 'a connection' }).catch((e: unknown) => {
        if (isQisError(e) && e === conn.netError) ch.end(e);
      });
    }
    if (options.signal) {
      if (options.signal.aborted) ch.end();
      options.signal.addEventListener('abort', () => ch.end(), { once: true });
    }
    return Object.assign(ch, { dropped });
  }

  endAll(): void {
    for (const c of [...this.#watches]) c.end();
  }
}
