/**
 * Every retained message under one topic filter, checked by this page on arrival and kept per
 * topic (what the broker retains), bounded. Shared by the Cohort explorer (outcome packets) and
 * Track records (score packets): signatures of a batch go to WebCrypto together, then src/ checks
 * each message synchronously with those verdicts; the page redraws when a burst is done, or every
 * REDRAW_MS while one lasts, never once per packet.
 */
import { useEffect, useState } from 'preact/hooks';
import { MAX_MESSAGES, backend, cryptoReady, type Session } from './session.js';
import { preverify } from './webcrypto.js';

/** Messages verified per turn of the event loop (WebCrypto checks a whole batch in parallel). */
const BATCH = 500;
/** Longest wait between redraws while a burst of retained messages is still being checked. */
const REDRAW_MS = 250;

export interface Heard<T> {
  readonly messages: ReadonlyMap<string, T>;
  /** Bumped at every redraw (a memo key). */
  readonly version: number;
  /** Messages waiting to be checked. */
  readonly pending: number;
  /** Messages forgotten over MAX_MESSAGES. */
  readonly forgotten: number;
}

/**
 * @param also other signed documents a message carries whose signatures `check` verifies too (an
 *   enrolment, PROTOCOL §10), checked with the batch; a thrown error means none.
 */
export function useVerifiedMessages<T>(
  session: Session,
  filter: string | undefined,
  check: (topic: string, payload: Uint8Array, now: number) => T,
  also?: (payload: Uint8Array) => { topic: string; payload: Uint8Array } | undefined,
): Heard<T> {
  const [state, setState] = useState<Heard<T>>({ messages: new Map(), version: 0, pending: 0, forgotten: 0 });
  useEffect(() => {
    if (filter === undefined) return;
    const messages = new Map<string, T>();
    const queue: { topic: string; payload: Uint8Array }[] = [];
    let forgotten = 0;
    let version = 0;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let draining = false;
    let drawnAt = 0;
    const drain = async (): Promise<void> => {
      timer = undefined;
      draining = true;
      const batch = queue.splice(0, BATCH);
      await cryptoReady;
      if (backend === 'node') {
        const signed = batch.filter((m) => m.payload.length > 0);
        const extra = also ? signed.flatMap((m) => alsoSigned(also, m.payload)) : [];
        await preverify([...signed, ...extra]);
      }
      draining = false;
      if (stopped) return;
      for (const m of batch) {
        messages.delete(m.topic); // re-inserted last: the map's order is arrival order
        if (m.payload.length === 0) continue; // the broker cleared it (moved, withdrawn or expired)
        messages.set(m.topic, check(m.topic, m.payload, session.now()));
        if (messages.size > MAX_MESSAGES) {
          const oldest = messages.keys().next();
          if (!oldest.done) messages.delete(oldest.value);
          forgotten++;
        }
      }
      if (queue.length > 0) timer = setTimeout(() => void drain(), 0);
      const now = performance.now();
      if (queue.length === 0 || now - drawnAt >= REDRAW_MS) {
        drawnAt = now;
        setState({ messages, version: ++version, pending: queue.length, forgotten });
      }
    };
    const stop = session.watch(filter, (topic, payload) => {
      if (queue.length >= MAX_MESSAGES) {
        forgotten++;
        return;
      }
      queue.push({ topic, payload });
      if (!draining) timer ??= setTimeout(() => void drain(), 0);
    });
    setState({ messages, version: 0, pending: 0, forgotten: 0 });
    return () => {
      stopped = true;
      stop();
      if (timer) clearTimeout(timer);
    };
  }, [session, filter, check, also]);
  return state;
}

function alsoSigned(also: (payload: Uint8Array) => { topic: string; payload: Uint8Array } | undefined, payload: Uint8Array): { topic: string; payload: Uint8Array }[] {
  try {
    const d = also(payload);
    return d ? [d] : [];
  } catch {
    return []; // src/ refuses it with its code
  }
}
