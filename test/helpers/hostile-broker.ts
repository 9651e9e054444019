// A hostile MQTT 3.1.1 "broker" on raw loopback sockets: it CONNACKs and then misbehaves as told
// (never SUBACKs, never PUBACKs, floods retained junk, announces one huge PUBLISH). A real broker
// cannot be made to misbehave like this, so the node's defences are tested against this one.
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { varint } from '../../bench/hostile-kit.js';

export { varint };

export interface HostileBehaviour {
  /** Answer SUBSCRIBE (default true). */
  readonly suback?: boolean;
  /** Answer a QoS 1 PUBLISH (default true). */
  readonly puback?: boolean;
  /** Called after each SUBSCRIBE (after its SUBACK, if any), with its filters. */
  readonly onSubscribe?: (sock: Socket, filters: string[]) => void;
}

export interface HostileBroker {
  readonly url: string;
  /** SUBSCRIBE packets received, each as its filters. */
  readonly subscribes: string[][];
  /** Topics of the PUBLISH packets received. */
  readonly publishes: string[];
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

/** A QoS 0 PUBLISH, retained unless told otherwise. */
export function publishPacket(topic: string, payload: Uint8Array, retain = true): Buffer {
  const t = Buffer.from(topic, 'utf8');
  const body = Buffer.concat([Buffer.from([t.length >> 8, t.length & 0xff]), t, payload]);
  return Buffer.concat([Buffer.from([retain ? 0x31 : 0x30]), varint(body.length), body]);
}

/** Writes `chunks` in order, waiting for the socket to drain; stops when it closes. */
export async function writeAll(sock: Socket, chunks: Iterable<Uint8Array>): Promise<void> {
  for (const c of chunks) {
    if (sock.destroyed || !sock.writable) return;
    if (!sock.write(c)) {
      // events.once rejects on 'error': a reset by the reader is the end of the writing here.
      const drained = once(sock, 'drain').then(() => true, () => false);
      const closed = once(sock, 'close').then(() => false, () => false);
      if (!(await Promise.race([drained, closed]))) return;
    }
  }
}

/** `count` junk retained messages on `topic(i)`, batched into ~64 KB writes. */
export function* junk(count: number, topic: (i: number) => string, payload: Uint8Array = Buffer.from('junk')): Generator<Buffer> {
  let batch: Buffer[] = [];
  let size = 0;
  for (let i = 0; i < count; i++) {
    const p = publishPacket(topic(i), payload);
    batch.push(p);
    size += p.length;
    if (size >= 64 * 1024) {
      yield Buffer.concat(batch);
      batch = [];
      size = 0;
    }
  }
  if (batch.length > 0) yield Buffer.concat(batch);
}

/** A PUBLISH announcing `bytes` of body, then that body in 64 KB zero chunks (as long as the reader takes them). */
export function* hugePublish(topic: string, bytes: number): Generator<Buffer> {
  const t = Buffer.from(topic, 'utf8');
  yield Buffer.concat([Buffer.from([0x30]), varint(bytes), Buffer.from([t.length >> 8, t.length & 0xff]), t]);
  const chunk = Buffer.alloc(64 * 1024);
  for (let left = bytes - 2 - t.length; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

export async function startHostileBroker(b: HostileBehaviour = {}): Promise<HostileBroker> {
  const sockets = new Set<Socket>();
  const subscribes: string[][] = [];
  const publishes: string[] = [];
  let accepted = 0;
  const server = createServer((sock) => {
    accepted++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const p = nextPacket(buf);
        if (!p) break;
        buf = buf.subarray(p.end);
        handle(sock, p.type, p.flags, p.body);
      }
    });
  });
  const handle = (sock: Socket, type: number, flags: number, body: Buffer): void => {
    const id = (at: number): Buffer => body.subarray(at, at + 2);
    if (type === 1) sock.write(Buffer.from([0x20, 2, 0, 0])); // CONNECT → CONNACK accepted
    else if (type === 8) {
      const filters: string[] = [];
      const qos: number[] = [];
      for (let i = 2; i < body.length; ) {
        const n = body.readUInt16BE(i);
        filters.push(body.subarray(i + 2, i + 2 + n).toString('utf8'));
        qos.push(body[i + 2 + n] ?? 0);
        i += 3 + n;
      }
      subscribes.push(filters);
      if (b.suback !== false) sock.write(Buffer.concat([Buffer.from([0x90, 2 + qos.length]), id(0), Buffer.from(qos)]));
      b.onSubscribe?.(sock, filters);
    } else if (type === 3) {
      const n = body.readUInt16BE(0);
      publishes.push(body.subarray(2, 2 + n).toString('utf8'));
      if (((flags >> 1) & 3) > 0 && b.puback !== false) sock.write(Buffer.concat([Buffer.from([0x40, 2]), id(2 + n)]));
    } else if (type === 10) sock.write(Buffer.concat([Buffer.from([0xb0, 2]), id(0)]));
    else if (type === 12) sock.write(Buffer.from([0xd0, 0]));
    else if (type === 14) sock.end();
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    subscribes,
    publishes,
    connections: () => accepted,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** One whole packet at the start of `buf`, if it is all there (the node is trusted to frame correctly). */
function nextPacket(buf: Buffer): { type: number; flags: number; body: Buffer; end: number } | undefined {
  if (buf.length < 2) return undefined;
  let len = 0;
  let mult = 1;
  let i = 1;
  for (;;) {
    const b = buf[i];
    if (b === undefined) return undefined;
    len += (b & 0x7f) * mult;
    mult *= 128;
    i++;
    if ((b & 0x80) === 0) break;
  }
  if (buf.length < i + len) return undefined;
  return { type: buf[0]! >> 4, flags: buf[0]! & 0x0f, body: buf.subarray(i, i + len), end: i + len };
}
