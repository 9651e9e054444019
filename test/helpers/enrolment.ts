// Enrolment tests' shared parts: a clock from a fixed instant T0 (never today's date), two
// operators, a qis broker over loopback with an injected clock, enrolments and packets.
import type { Test } from 'tap';
import { mkdtempSync } from 'node:fs';
import { pino } from 'pino';
import { createBroker, type QisBroker } from '../../broker/server.js';
import type { BrokerConfig } from '../../broker/options.js';
import { attachEnrolment, createEnrolment, createOutcomePacket, keyFromSeed, type NodeKey } from '../../src/index.js';
import { join } from 'node:path';
import { seed } from './federation.js';
import { bearing, situation } from './fixtures.js';

export const T0 = Date.UTC(2031, 5, 1);
const started = performance.now();
/** A clock that runs from T0 (timers still need time to pass). */
export const clock = (): number => T0 + Math.floor(performance.now() - started);
export const nowS = (): number => Math.floor(clock() / 1000);

export const opA = keyFromSeed(seed(1, 0xa));
export const opB = keyFromSeed(seed(2, 0xa));

export interface Running {
  readonly broker: QisBroker;
  readonly url: string;
  readonly lines: Record<string, unknown>[];
}

/**
 * A broker in a fresh directory under `root`, on the injected clock (or `now`: a test that talks to
 * a `qis` process, which reads the real clock, gives both the same one), closed at the end of `t`;
 * its log lines are kept.
 */
export async function startBroker(t: Test, root: string, admission: BrokerConfig['admission'] = {}, now: () => number = clock): Promise<Running> {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const broker = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port: 0 }], dataDir: mkdtempSync(join(root, 'b-')), verifyWorkers: 0, admission },
    { logger, now },
  );
  t.teardown(() => broker.close());
  const port = broker.addresses().find((a) => a.type === 'tcp')?.port;
  return { broker, url: `mqtt://127.0.0.1:${port}`, lines };
}

export function enrol(op: NodeKey, node: NodeKey, o: { days?: number; scope?: string[]; expS?: number } = {}): Uint8Array {
  return createEnrolment(op, { node: node.publicKey, exp: o.expS ?? nowS() + (o.days ?? 30) * 86_400, ...(o.scope ? { scope: o.scope } : {}) });
}

/** A bearing packet of `node` (outcome `failure` unless given), with its enrolment attached when given. */
export function packet(node: NodeKey, enrolment?: Uint8Array, seq = clock(), outcome = 'failure', ts = clock()): { topic: string; packet: Uint8Array } {
  const p = createOutcomePacket({ key: node, template: bearing, situation, outcome, seq, ts });
  return { topic: p.topic, packet: enrolment ? attachEnrolment(p.packet, enrolment) : p.packet };
}
