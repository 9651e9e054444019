// The qis regional broker in-process on a free loopback port, with a temp data directory.
// Verification runs on the main thread unless a test asks for workers: under tap's TypeScript
// loader each worker thread compiles the sources again when it starts (seconds on a busy machine).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createBroker, type BrokerDeps, type QisBroker } from '../../broker/server.js';
import type { BrokerConfig } from '../../broker/options.js';

export interface TestBroker {
  readonly broker: QisBroker;
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Stops the broker; `keepData` leaves the data directory for a restart. */
  close(keepData?: boolean): Promise<void>;
}

/** `deps`: what createBroker takes besides the config (a clock, …); the logger is silent unless QIS_TEST_LOG says. */
export async function startQisBroker(config: BrokerConfig = {}, dataDir?: string, deps: Omit<BrokerDeps, 'logger'> = {}): Promise<TestBroker> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'qis-broker-'));
  const broker = await createBroker(
    { listeners: [{ type: 'tcp', host: '127.0.0.1', port: 0 }], dataDir: dir, verifyWorkers: 0, ...config },
    { ...deps, logger: pino({ level: process.env['QIS_TEST_LOG'] ?? 'silent' }) },
  );
  const a = broker.addresses().find((x) => x.type === 'tcp');
  if (!a) throw new Error('no tcp listener');
  return {
    broker,
    url: `mqtt://127.0.0.1:${a.port}`,
    port: a.port,
    dataDir: dir,
    async close(keepData = false) {
      await broker.close();
      if (!keepData) rmSync(dir, { recursive: true, force: true });
    },
  };
}
