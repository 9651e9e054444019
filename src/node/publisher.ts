/**
 * Publishing through the durable outbox (PROTOCOL §5–§6): seq allocation, the signed packet and
 * any tombstone for the node's previous bucket queued before anything is sent, the outbox sent on
 * every connection, PUBACKs waited for, and packets a broker keeps refusing set aside.
 */
import { fromHex, toHex } from '../protocol/bytes.js';
import { QisError, isQisError } from '../protocol/errors.js';
import { address, outcomeTopic, type Situation } from '../protocol/fingerprint.js';
import type { NodeKey } from '../protocol/identity.js';
import { createOutcomePacket } from '../protocol/outcome.js';
import { signPacket, type Outcome } from '../protocol/packet.js';
import type { Template } from '../protocol/template.js';
import type { Connection } from './connection.js';
import type { Enrolled } from './enrolled.js';
import { positive, throwIfAborted } from './options.js';
import type { Outbox, OutboxEntry } from './outbox.js';
import type { FlushResult, PublishOptions, PublishResult } from './types.js';

/** What became of a published entry by the time its caller stopped waiting. */
type Delivery = 'acked' | 'queued' | 'refused';

/** A connection lost within this time of sending an entry counts as a refusal of that entry. */
const REFUSAL_WINDOW_MS = 3_000;
/** Refusals in a row after which a queued entry is set aside. */
const REFUSALS_BEFORE_SET_ASIDE = 5;

/** A template, or a template id to fetch from the registry. */
export type Resolve = (t: Template | string, signal: AbortSignal | undefined, timeoutMs?: number) => Promise<Template>;

export class Publisher {
  readonly #conn: Connection;
  readonly key: NodeKey;
  readonly outbox: Outbox;
  readonly #resolve: Resolve;
  /** Entries sent on this connection and not yet acknowledged, with when they were sent. */
  readonly #inflight = new Map<string, number>();
  /** Connections lost right after sending an entry, per entry: the way a broker refuses a publish. */
  readonly #refusals = new Map<string, number>();
  #delivered = 0;
  /** PUBACKs received since the node opened; flush() reports those no earlier flush() reported. */
  #ackedTotal = 0;
  #ackedReported = 0;
  /** Entries set aside since the node opened, in order (the last 1,000), and how many in all. */
  readonly #setAside: OutboxEntry[] = [];
  #asideTotal = 0;
  #asideReported = 0;
  readonly #ackedNames = new Set<string>();
  /** Outbox files of acknowledged packets still being removed. */
  readonly #removals = new Set<Promise<void>>();
  /** Serialises seq allocation and outbox writes. */
  #writes: Promise<unknown> = Promise.resolve();

  readonly #enrolled: Enrolled | undefined;

  constructor(conn: Connection, key: NodeKey, outbox: Outbox, resolve: Resolve, enrolled?: Enrolled) {
    this.#conn = conn;
    this.key = key;
    this.outbox = outbox;
    this.#resolve = resolve;
    this.#enrolled = enrolled;
    conn.setHooks({
      connected: () => {
        const w = this.#enrolled?.warning(conn.now());
        if (w) conn.emit(w);
        this.#drain();
      },
      lost: () => {
        this.#noteRefusals();
        this.#inflight.clear(); // unacknowledged entries stay in the outbox and go again
      },
    });
  }

  /** Runs `fn` after every earlier outbox write, one at a time. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#writes.then(fn, fn);
    this.#writes = run.catch(() => undefined);
    return run;
  }

  #nextSeq(tplId: string, count: number): number {
    // Strictly increasing across restarts; Unix ms when the counter was lost (PROTOCOL §5).
    const first = Math.max(this.outbox.lastSeq(tplId) + 1, Math.floor(this.#conn.now()));
    return first + count - 1;
  }

  async publish(t: Template | string, situation: Situation, outcome: Outcome, options: PublishOptions = {}): Promise<PublishResult> {
    this.#conn.checkOpen();
    throwIfAborted(options.signal);
    positive('ackTimeoutMs', options.ackTimeoutMs, true);
    const template = await this.#resolve(t, options.signal);
    const addr = address(template, situation);
    const topic = outcomeTopic(addr, this.key.nodeId);
    const result = await this.serial(async () => {
      this.#conn.checkOpen();
      throwIfAborted(options.signal);
      const prev = this.outbox.bucket(template.tplId);
      const moved = prev !== undefined && prev.topic !== topic;
      const seq = this.#nextSeq(template.tplId, moved ? 2 : 1);
      const ts = options.ts ?? Math.floor(this.#conn.now());
      // Sign first: an outcome that does not fit the template is refused before anything is written.
      const signed = createOutcomePacket({
        key: this.key,
        template,
        situation,
        outcome,
        seq,
        ts,
        ...(options.conf !== undefined ? { conf: options.conf } : {}),
        ...(options.n !== undefined ? { n: options.n } : {}),
        ...(options.ctx !== undefined ? { ctx: options.ctx } : {}),
        ...(options.exp !== undefined ? { exp: options.exp } : {}),
        ...this.#conn.backend(),
      });
      let tomb: { topic: string; seq: number; packet: Uint8Array } | undefined;
      if (moved) {
        // The old bucket gets a signed tombstone one seq below the new packet, sent before it, so
        // any broker (Mosquitto too) ends with one live packet for this node.
        const tseq = seq - 1;
        tomb = { topic: prev.topic, seq: tseq, packet: signPacket(this.key, prev.topic, { fp: hexFp(prev.fp), seq: tseq, ts, del: true }, this.#conn.backend()) };
      }
      // Reserve the seq before anything is queued, but record the new bucket only once both the
      // tombstone and the packet are queued: after a crash in between, the next publish still
      // knows the old bucket and owes it a tombstone.
      if (!moved) {
        // Same bucket: the state file and the queued packet are independent (either one alone
        // keeps seq increasing after a crash), so both durable writes go at once.
        const [, entry] = await Promise.all([
          this.outbox.setState(template.tplId, { seq, topic, fp: toHex(addr.fp) }),
          this.outbox.add('packet', template.tplId, topic, seq, signed.packet, options.exp),
        ]);
        return { entry, tomb };
      }
      await this.outbox.setState(template.tplId, { ...prev, seq });
      if (tomb) await this.outbox.add('tombstone', template.tplId, tomb.topic, tomb.seq, tomb.packet);
      const entry = await this.outbox.add('packet', template.tplId, topic, seq, signed.packet, options.exp);
      await this.outbox.setState(template.tplId, { seq, topic, fp: toHex(addr.fp) });
      return { entry, tomb };
    });
    this.send();
    const delivery = await this.waitAck(result.entry, options.ackTimeoutMs ?? this.#conn.o.ackTimeoutMs, options.signal);
    return {
      topic,
      seq: result.entry.seq,
      packet: this.wire(result.entry.packet),
      ...(result.tomb ? { tombstone: { ...result.tomb, packet: this.wire(result.tomb.packet) } } : {}),
      acked: delivery === 'acked',
      ...(delivery === 'refused' ? { refused: true as const } : {}),
    };
  }

  async withdraw(t: Template | string, options: { ackTimeoutMs?: number; signal?: AbortSignal } = {}): Promise<PublishResult | undefined> {
    this.#conn.checkOpen();
    throwIfAborted(options.signal);
    const template = await this.#resolve(t, options.signal);
    const entry = await this.serial(async () => {
      const prev = this.outbox.bucket(template.tplId);
      if (!prev) return undefined;
      const seq = this.#nextSeq(template.tplId, 1);
      const packet = signPacket(this.key, prev.topic, { fp: hexFp(prev.fp), seq, ts: Math.floor(this.#conn.now()), del: true }, this.#conn.backend());
      await this.outbox.setState(template.tplId, { ...prev, seq });
      return this.outbox.add('tombstone', template.tplId, prev.topic, seq, packet);
    });
    if (!entry) return undefined;
    this.send();
    const delivery = await this.waitAck(entry, options.ackTimeoutMs ?? this.#conn.o.ackTimeoutMs, options.signal);
    return { topic: entry.topic, seq: entry.seq, packet: this.wire(entry.packet), acked: delivery === 'acked', ...(delivery === 'refused' ? { refused: true as const } : {}) };
  }

  /**
   * A packet as it goes on the wire: with the node's enrolment (PROTOCOL §10) in its unprotected
   * header. Attached at sending, not at queueing, so packets queued before an enrolment was
   * installed or renewed carry the current one.
   */
  wire(packet: Uint8Array): Uint8Array {
    return this.#enrolled ? this.#enrolled.attach(packet) : packet;
  }

  /** Something was queued: wake the waiters and send what is not in flight yet. */
  send(): void {
    this.#conn.wake();
    this.#drain();
  }

  /**
   * `acked` once acknowledged; `refused` when the broker closed the connection right after the
   * entry was sent (MQTT 3.1.1's only way to refuse a publish) or set it aside; `queued` when it
   * stays in the outbox (offline, superseded, or not acked in time).
   */
  async waitAck(entry: OutboxEntry, ackTimeoutMs: number, signal: AbortSignal | undefined): Promise<Delivery> {
    if (ackTimeoutMs === 0) return 'queued';
    const deadline = this.#conn.now() + ackTimeoutMs;
    try {
      return await this.#conn.until<Delivery>(
        () => {
          if (!this.outbox.has(entry.name)) return this.#ackedNames.has(entry.name) ? 'acked' : this.#setAside.includes(entry) ? 'refused' : 'queued';
          // Offline (and the first attempt already failed): it is safe in the outbox; say so now,
          // unless that failure was the broker closing the connection on this very packet.
          const failedNow = this.#conn.o.failFast === true && this.#conn.netError !== undefined;
          if (failedNow || (this.#conn.state === 'waiting' && this.#conn.everSettled)) return this.#refusals.has(entry.name) ? 'refused' : 'queued';
          return undefined;
        },
        { deadline, signal, what: 'the PUBACK' },
      );
    } catch (e) {
      if (isQisError(e) && e.code === 'ERR_TIMEOUT') return 'queued';
      throw e;
    } finally {
      this.#ackedNames.delete(entry.name);
    }
  }

  #drain(): void {
    const client = this.#conn.client;
    if (this.#conn.state !== 'connected' || !client) return;
    const gen = this.#conn.gen;
    for (const e of this.outbox.entries()) {
      if (this.#inflight.has(e.name)) continue;
      if (e.exp !== undefined && this.#conn.now() > e.exp * 1000) {
        // A stale packet would be refused by any conforming broker; drop it here and say so.
        this.#conn.emit({ type: 'refused', code: 'ERR_EXPIRED', message: `queued packet seq ${e.seq} expired before it could be sent; dropped`, topic: e.topic });
        this.outbox.remove(e.name).then(
          () => this.#conn.wake(), // a flush() waiting for an empty outbox
          (err: unknown) => this.#conn.ioFailure(err),
        );
        continue;
      }
      this.#inflight.set(e.name, this.#conn.now());
      client.publish(e.topic, Buffer.from(this.wire(e.packet)), { qos: 1, retain: true }, (err) => {
        if (gen !== this.#conn.gen) return; // that connection is gone: the entry goes again on the next one
        this.#inflight.delete(e.name);
        if (err) return;
        this.#conn.resetBackoff(); // a PUBACK: this connection works
        this.#refusals.delete(e.name);
        void this.#acked(e).catch((er: unknown) => this.#conn.ioFailure(er));
      });
    }
  }

  async #acked(e: OutboxEntry): Promise<void> {
    // Counted when the PUBACK arrives, before the entry leaves the index: a flush() woken by the
    // empty outbox must already see it.
    this.#ackedTotal++;
    if (this.outbox.has(e.name)) {
      this.#ackedNames.add(e.name);
      // Only waiters read this set; keep it from growing when nobody waits.
      if (this.#ackedNames.size > 1000) this.#ackedNames.delete(this.#ackedNames.values().next().value as string);
      // The entry leaves the outbox's index at once, so waiters learn of the PUBACK now; its file
      // goes in the background (close() waits). A crash before the unlink only resends a packet
      // the broker drops as stale.
      const removal = this.outbox.remove(e.name);
      this.#conn.wake();
      this.#removals.add(removal);
      try {
        await removal;
      } finally {
        this.#removals.delete(removal);
      }
    }
    this.#delivered++;
    if (this.outbox.size === 0 && this.#inflight.size === 0) {
      this.#conn.emit({ type: 'outbox-flushed', delivered: this.#delivered });
      this.#delivered = 0;
    }
    this.#conn.wake();
  }

  /**
   * MQTT 3.1.1 has no negative PUBACK: a broker refuses a publish by closing the connection. An
   * entry whose sending was followed by a lost connection, again and again, is set aside as
   * `<name>.bad` and reported, so one refused packet cannot block the node forever.
   */
  #noteRefusals(): void {
    const now = this.#conn.now();
    for (const [name, sentAt] of this.#inflight) {
      if (now - sentAt > REFUSAL_WINDOW_MS) continue;
      const n = (this.#refusals.get(name) ?? 0) + 1;
      this.#refusals.set(name, n);
      if (n < REFUSALS_BEFORE_SET_ASIDE) continue;
      this.#refusals.delete(name);
      const e = this.outbox.entries().find((x) => x.name === name);
      if (e) {
        this.#setAside.push(e);
        this.#asideTotal++;
        if (this.#setAside.length > 1000) this.#setAside.shift();
      }
      this.#conn.emit({
        type: 'refused',
        code: 'ERR_DELIVERY_REFUSED',
        message: `the broker closed the connection each of the ${n} times packet seq ${e?.seq ?? '?'} was sent; it is set aside as outbox/${name}.bad`,
        ...(e ? { topic: e.topic } : {}),
      });
      void this.outbox.setAside(name).then(
        () => this.#conn.wake(),
        (err: unknown) => this.#conn.ioFailure(err),
      );
    }
  }

  /**
   * Waits for an empty outbox; says how many packets the broker acknowledged and which it refused
   * since the node opened or the last flush() (a packet sent at connect, before flush() was
   * called, was delivered by this session too: it counts).
   */
  async flush(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<FlushResult> {
    this.#conn.checkOpen();
    positive('timeoutMs', options.timeoutMs);
    const deadline = options.timeoutMs === undefined ? undefined : this.#conn.now() + options.timeoutMs;
    await this.#conn.until(() => (this.outbox.size === 0 ? true : undefined), {
      ...(deadline !== undefined ? { deadline } : {}),
      signal: options.signal,
      what: `the outbox to empty (${this.outbox.size} packet(s) left)`,
    });
    const newAside = Math.min(this.#asideTotal - this.#asideReported, this.#setAside.length);
    const setAside = this.#setAside.slice(this.#setAside.length - newAside).map((e) => ({ name: `${e.name}.bad`, kind: e.kind, topic: e.topic, seq: e.seq, packet: e.packet }));
    const delivered = this.#ackedTotal - this.#ackedReported;
    this.#ackedReported = this.#ackedTotal;
    this.#asideReported = this.#asideTotal;
    return { delivered, setAside };
  }

  /** Resolves once every queued outbox write is done. */
  async settled(): Promise<void> {
    await this.#writes.catch(() => undefined);
  }

  /** Resolves once the files of acknowledged packets are removed. */
  async removalsSettled(): Promise<void> {
    await Promise.allSettled([...this.#removals]);
  }
}

function hexFp(hex: string): Uint8Array {
  const fp = fromHex(hex);
  if (!fp || fp.length !== 16) throw new QisError('ERR_INTERNAL', `state file holds a bad fp ${JSON.stringify(hex)}`);
  return fp;
}
