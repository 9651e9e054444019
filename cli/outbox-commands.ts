/** `qis flush`, `qis status`, `qis withdraw`: what a node's outbox holds and what became of it. */
import { join } from 'node:path';
import { QisError, decodePacket, deliveryRefused, listOutbox, type ListedEntry } from '../src/index.js';
import { CONNECTION, interruptSignal, nodeOptions, templateFlag, withNode } from './node-commands.js';
import { numberFlag, str, type Command } from './run.js';

const DATA_DIR = { type: 'string', value: 'DIR', help: "the node's directory (as given to qis publish)", required: true } as const;

const flush: Command = {
  path: ['flush'],
  summary: "deliver the packets queued in a node's outbox",
  flags: {
    ...CONNECTION,
    'data-dir': DATA_DIR,
    timeout: { type: 'string', value: 'MS', help: 'give up after this long (default 30000); the outbox is kept' },
  },
  details: `Counts only the packets the broker acknowledged. Exit status 0 when the outbox is empty and every
packet was acknowledged; 1 with ERR_DELIVERY_REFUSED when the broker kept refusing packets (they
are set aside as DIR/outbox/*.json.bad, named, with the likely reason: e.g. a clock far ahead of
the broker's); 1 with ERR_TIMEOUT when packets are still queued.`,
  async run(flags) {
    const timeoutMs = flags.timeout === undefined ? 30_000 : numberFlag('timeout', str(flags.timeout), true);
    const dataDir = str(flags['data-dir']);
    const r = await withNode(flags, async (node) => {
      const intr = interruptSignal();
      try {
        return await node.flush({ timeoutMs: Math.max(1, timeoutMs), signal: intr.signal });
      } finally {
        intr.dispose();
      }
    });
    if (r.setAside.length > 0) {
      const names = r.setAside.map((e) => join(dataDir, 'outbox', e.name));
      throw await deliveryRefused(
        await nodeOptions(flags, dataDir),
        `delivered ${r.delivered}; the broker refused ${r.setAside.length} packet(s) (it closed the connection each time one was sent), set aside: ${names.join(', ')}`,
        r.setAside.flatMap((e) => tsOf(e.packet)),
      );
    }
    const human = r.delivered === 0 ? 'outbox is empty: nothing to deliver' : `delivered ${r.delivered} packet(s), each acknowledged by the broker; outbox is empty`;
    return { json: { ok: true, delivered: r.delivered, queued: 0 }, human };
  },
};

function tsOf(packet: Uint8Array): number[] {
  try {
    return [decodePacket(packet).ts];
  } catch {
    return []; // a score packet: its ts is not the outcome envelope's
  }
}

const status: Command = {
  path: ['status'],
  summary: "what a node's outbox holds: packets queued for the broker and packets set aside (offline)",
  flags: { 'data-dir': DATA_DIR },
  details: 'Reads DIR/outbox without opening the node (works while another qis command holds it). Exit status 0.',
  async run(flags) {
    const dataDir = str(flags['data-dir']);
    const l = await listOutbox(dataDir);
    const line = (e: ListedEntry): string =>
      `  ${e.name}  ${e.kind}${e.seq !== undefined ? ` seq ${e.seq}` : ''}${e.ts !== undefined ? `  ts ${new Date(e.ts).toISOString()}` : ''}${e.topic ? `  ${e.topic}` : ''}`;
    const human = [
      `outbox    ${join(dataDir, 'outbox')}`,
      `queued    ${l.queued.length}${l.queued.length > 0 ? ' (qis flush delivers them)' : ''}`,
      ...l.queued.map(line),
      `set aside ${l.setAside.length}${l.setAside.length > 0 ? ' (refused by the broker or unreadable; never sent again: inspect, then delete)' : ''}`,
      ...l.setAside.map(line),
    ].join('\n');
    return { json: { ok: true, queued: l.queued, setAside: l.setAside }, human };
  },
};

const withdraw: Command = {
  path: ['withdraw'],
  summary: "withdraw this node's packet for a template: a signed tombstone through the outbox",
  flags: {
    ...CONNECTION,
    'data-dir': DATA_DIR,
    template: { type: 'string', value: 'FILE|ID', help: 'template file (YAML or JSON) or template id', required: true },
    'ack-timeout': { type: 'string', value: 'MS', help: "how long to wait for the broker's PUBACK (default 10000)" },
  },
  details: `The tombstone replaces the node's last packet for the template (in the bucket it was published to),
so queries stop counting this node. Queued like any packet when the broker is away (exit 0, said
so); ERR_DELIVERY_REFUSED when the broker refuses it; ERR_NOTHING_TO_WITHDRAW when this node never published
for the template.`,
  async run(flags) {
    const template = await templateFlag(str(flags.template));
    const ackTimeoutMs = flags['ack-timeout'] === undefined ? undefined : numberFlag('ack-timeout', str(flags['ack-timeout']), true);
    const dataDir = str(flags['data-dir']);
    const intr = interruptSignal();
    try {
      return await withNode(flags, async (node) => {
        const r = await node.withdraw(template, { signal: intr.signal, ...(ackTimeoutMs !== undefined ? { ackTimeoutMs } : {}) });
        if (!r) throw new QisError('ERR_NOTHING_TO_WITHDRAW', `this node (${dataDir}) never published for that template: nothing to withdraw`);
        if (r.refused) {
          throw await deliveryRefused(
            await nodeOptions(flags, dataDir),
            `the broker closed the connection when tombstone seq ${r.seq} was sent: NOT delivered; it stays in ${join(dataDir, 'outbox')}`,
            tsOf(r.packet),
          );
        }
        const state = r.acked ? 'acknowledged by the broker' : `NOT delivered yet: queued in ${join(dataDir, 'outbox')} (${node.pending} queued); deliver with: qis flush --data-dir ${dataDir} --url ${str(flags.url)}`;
        return { json: { ok: true, acked: r.acked, queued: node.pending, topic: r.topic, seq: r.seq }, human: `withdrew seq ${r.seq}: ${state}\ntopic     ${r.topic}` };
      });
    } finally {
      intr.dispose();
    }
  },
};

export const outboxCommands: readonly Command[] = [flush, status, withdraw];
