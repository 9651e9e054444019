/**
 * One WebSocket frame per MQTT packet. Aedes writes a packet through mqtt-packet, which corks the
 * stream and writes the fixed header, topic and payload as separate chunks; ws' Duplex has no
 * `_writev`, so each chunk became its own frame (6 frames per outcome packet). A browser pays per
 * frame (an event, a stream push, a parse turn): the console's first load of a 1,000-node cohort
 * read 6,000 frames. With `_writev` the corked chunks of a packet leave as one frame.
 */
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

export function framePerPacket(stream: Duplex, ws: WebSocket): void {
  (stream as Duplex & { _writev: (chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void) => void })._writev = (chunks, cb) => {
    ws.send(chunks.length === 1 ? (chunks[0] as { chunk: Buffer }).chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  };
}
