/**
 * Re-delivery on reconnect marks DUP (MQTT 3.1.1 [MQTT-3.3.1-1]: "The DUP flag MUST be set to 1 by
 * the Client or Server when it attempts to re-deliver a PUBLISH Packet"). Aedes resends a
 * resumed session's unacknowledged messages from `outgoingStream` with the flags they were stored
 * with, so DUP stayed 0 (found by test/conformance.test.ts, test_redelivery_on_reconnect). A stored
 * PUBLISH that already has a message id was sent before (Aedes assigns the id as it first writes
 * it); one queued while the client was offline has none and goes out as a first delivery.
 */
import type { Readable } from 'node:stream';

interface OutgoingPersistence {
  outgoingStream(client: unknown): Readable;
}

export function markRedeliveries(persistence: OutgoingPersistence): void {
  const stream = persistence.outgoingStream.bind(persistence);
  persistence.outgoingStream = (client: unknown): Readable =>
    stream(client).map((p: { cmd?: string; messageId?: number }) => (p.cmd === 'publish' && p.messageId !== undefined ? { ...p, dup: true } : p));
}
