/**
 * The machines' nodes. Every machine is its own node: `createNode` with its own data
 * directory (`<dataDir>/<machine>/key.json`, its outbox and seq state) and its own MQTT
 * connection, so its packets are signed by its own key and the broker keeps one packet per
 * machine and template; outages of the qis broker are covered by each node's durable outbox.
 *
 * One connection per machine, not one shared: a node's connection carries its client id, its
 * reconnect and PUBACK bookkeeping, and the broker's per-client rate limit and refusals; sharing
 * one would need a second publishing path beside the runtime's. A bridge serves tens to a few
 * hundred machines, well within what a broker holds.
 */
import { join } from 'node:path';
import { createNode, type NodeStatus, type QisNode } from '../src/index.js';
import type { BrokerTarget, Machine } from './config.js';
import { codeOf, type BridgeEvent, type BridgeOptions } from './events.js';
import { isSkip, type Emission, type MachineMapper, type Skip } from './mapping.js';

/** How long a publish waits for the qis broker's PUBACK before it is logged as queued (acked=false). */
const ACK_WAIT_MS = 5000;
/** With more packets than this waiting to be published, they are queued without waiting for acks. */
const ACK_WAIT_BACKLOG = 8;

/** One node per machine, publishing in order; every result is an event. */
export class Publisher {
  private chain: Promise<void> = Promise.resolve();
  private backlog = 0;
  /** Packets logged as queued (acked=false) and not yet seen acknowledged. */
  private unacked = 0;
  published = 0;
  acknowledged = 0;
  constructor(readonly node: QisNode, private readonly machine: string, private readonly emit: (e: BridgeEvent) => void) {}

  send(items: readonly (Emission | Skip)[]): void {
    for (const e of items) {
      if (isSkip(e)) {
        this.emit({ type: 'skipped', machine: e.machine, rule: e.rule, reason: e.reason });
        continue;
      }
      this.backlog++;
      this.chain = this.chain.then(async () => {
        try {
          // The packet is durable in the outbox before publish waits for the PUBACK. The wait is
          // short on a working connection and ends at once when the node is offline (it says so),
          // and there is none when packets pile up, so the poll loop is never held up.
          const r = await this.node.publish(e.template, e.situation, e.outcome, {
            ackTimeoutMs: this.backlog > ACK_WAIT_BACKLOG ? 0 : ACK_WAIT_MS,
            ts: e.ts, // when the readings were observed (PROTOCOL §5), not when the packet is built
            ...(e.ctx ? { ctx: e.ctx } : {}),
            ...(e.conf === undefined ? {} : { conf: e.conf }),
            ...(e.n === undefined ? {} : { n: e.n }),
          });
          this.published++;
          if (r.acked) this.acknowledged++;
          else this.unacked++;
          this.emit({ type: 'published', machine: e.machine, rule: e.rule, topic: r.topic, seq: r.seq, outcome: e.outcome, acked: r.acked });
        } catch (err) {
          this.emit({ type: 'publish-failed', machine: e.machine, rule: e.rule, code: codeOf(err), message: (err as Error).message });
        } finally {
          this.backlog--;
        }
      });
    }
  }

  /** The node's outbox is empty: what was logged as queued has been acknowledged (or superseded by a newer packet, itself acknowledged). */
  flushed(): void {
    if (this.unacked === 0) return;
    this.acknowledged += this.unacked;
    this.emit({ type: 'acknowledged', machine: this.machine, packets: this.unacked });
    this.unacked = 0;
  }

  idle(): Promise<void> {
    return this.chain;
  }
}

export async function openNodes(machines: readonly Machine<unknown>[], dataDir: string, broker: BrokerTarget, o: BridgeOptions, emit: (e: BridgeEvent) => void): Promise<Map<string, Publisher>> {
  const out = new Map<string, Publisher>();
  try {
    for (const m of machines) {
      const node = await createNode({
        url: broker.url,
        dataDir: join(dataDir, m.name),
        ...(broker.username === undefined ? {} : { username: broker.username }),
        ...(broker.password === undefined ? {} : { password: broker.password }),
        ...(broker.tls === undefined ? {} : { tls: broker.tls }),
        ...(o.nodeReconnect ? { reconnect: o.nodeReconnect } : {}),
      });
      const pub = new Publisher(node, m.name, emit);
      out.set(m.name, pub);
      void (async () => {
        for await (const s of node.status() as AsyncIterable<NodeStatus>) {
          if (s.type === 'refused') emit({ type: 'node-refused', machine: m.name, code: s.code, message: s.message });
          if (s.type === 'outbox-flushed') pub.flushed();
        }
      })().catch(() => undefined);
    }
  } catch (e) {
    await Promise.all([...out.values()].map((p) => p.node.close()));
    throw e;
  }
  return out;
}

/** Periodic (`every`) rules of a machine: one timer each. */
export function startPeriodic(mapper: MachineMapper, pub: Publisher): NodeJS.Timeout[] {
  return mapper.machine.rules.flatMap((rule) => (rule.when.kind === 'every' ? [setInterval(() => pub.send(mapper.periodic(rule)), rule.when.everyMs)] : []));
}
