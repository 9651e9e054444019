/**
 * What this broker publishes itself at start: qis/1/broker (PROTOCOL §7 note: nodes look there to
 * know the sync order holds) and the template documents it holds, both retained.
 */
import { readFileSync } from 'node:fs';
import { BROKER_INFO_TOPIC } from '../admission.js';
import type { BrokerContext } from './context.js';

/** How often qis/1/broker is rewritten with the broker's clock (`time`, Unix ms). */
export const BROKER_INFO_PERIOD_MS = 10_000;

export async function publishBrokerInfo(ctx: BrokerContext): Promise<void> {
  await publishInfo(ctx);
  for (const [topic, packet] of ctx.templates.documents()) await ctx.publish({ topic, payload: Buffer.from(packet), qos: 0, retain: true });
  for (const [topic, packet] of ctx.revocations.documents()) await ctx.publish({ topic, payload: Buffer.from(packet), qos: 1, retain: true });
}

/**
 * `time` lets a node whose packets are refused tell that its clock is far from the broker's
 * (ERR_TS_FUTURE reaches an MQTT 3.1.1 client only as a closed connection): kept fresh to within
 * BROKER_INFO_PERIOD_MS. Returns the stop.
 */
export function startBrokerInfoClock(ctx: BrokerContext): () => void {
  const t = setInterval(() => void publishInfo(ctx).catch((e: unknown) => ctx.logger.warn({ err: e }, 'broker info not republished')), BROKER_INFO_PERIOD_MS);
  t.unref();
  return () => clearInterval(t);
}

function publishInfo(ctx: BrokerContext): Promise<void> {
  // region and key: a peer's link learns which region it reached and the key that broker logs in with (PROTOCOL §8).
  const f = ctx.options.federation;
  const info = { kind: 'qis', version: packageVersion(), sync: 'ordered', time: Math.floor(ctx.now()), ...(f ? { region: f.region } : {}), ...(ctx.brokerKey ? { key: ctx.brokerKey.nodeId } : {}) };
  return ctx.publish({ topic: BROKER_INFO_TOPIC, payload: Buffer.from(JSON.stringify(info)), qos: 0, retain: true });
}

/** The package version, from broker/server/ (tests) or dist/broker/server/ (built). */
function packageVersion(): string {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'qis-mqtt' && pkg.version) return pkg.version;
    } catch {
      // try the next level up
    }
  }
  return 'unknown';
}
