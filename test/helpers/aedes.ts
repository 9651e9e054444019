// A plain Aedes 1.x broker (no qis admission) on a free loopback port, for the runtime's tests
// against a broker that does not keep the sync marker's order (PROTOCOL §7).
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';

export interface PlainAedes {
  readonly port: number;
  readonly url: string;
  readonly broker: Aedes;
  /** Stops accepting and drops every client; `start()` listens again on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startAedes(port = 0): Promise<PlainAedes> {
  const broker = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let bound = port;
  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = createServer((sock) => {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        broker.handle(sock);
      });
      s.once('error', reject);
      s.listen(bound, '127.0.0.1', () => {
        const a = s.address();
        if (typeof a === 'object' && a) bound = a.port;
        server = s;
        resolve();
      });
    });
  const stop = async (): Promise<void> => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  await listen();
  return {
    get port() {
      return bound;
    },
    get url() {
      return `mqtt://127.0.0.1:${bound}`;
    },
    broker,
    stop,
    start: listen,
    async close() {
      await stop();
      await new Promise<void>((r) => broker.close(() => r()));
    },
  };
}
