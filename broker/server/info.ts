/**
 * What this broker publishes itself at start: qis/1/broker (PROTOCOL §7 note: nodes look there to
 * know the sync order holds) and the template documents it holds, both retained.
 */
import { readFileSync } from 'node:fs';
import { BROKER_INFO_TOPIC } from '../admission.js';
import type { BrokerContext } from './context.js';

export async function publishBrokerInfo(ctx: BrokerContext): Promise<void> {
  const info = { kind: 'qis', version: packageVersion(), sync: 'ordered' };
  await ctx.publish({ topic: BROKER_INFO_TOPIC, payload: Buffer.from(JSON.stringify(info)), qos: 0, retain: true });
  for (const [topic, packet] of ctx.templates.documents()) await ctx.publish({ topic, payload: Buffer.from(packet), qos: 0, retain: true });
  for (const [topic, packet] of ctx.revocations.documents()) await ctx.publish({ topic, payload: Buffer.from(packet), qos: 1, retain: true });
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
