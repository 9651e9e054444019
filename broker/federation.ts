/**
 * Federation (PROTOCOL §8): links between regional brokers. A link is an mqtt.js connection from
 * this broker to a peer broker; over it both directions carry the forwarded qis/1 prefixes:
 *
 * - peer → here: the link subscribes to the prefixes on the peer; every packet received goes
 *   through this broker's admission (verify, seq check, store) exactly as a client's publish
 *   would; an outcome packet is delivered to local subscribers and forwarded on once it is in the
 *   store's index, and the peer's answer follows the durable write (server/outcomes.ts, `relay`).
 *   A packet that is not newer than the stored one is dropped and so never forwarded again: loops die.
 * - here → peer: every packet this broker admits (from a client or another link) is published
 *   on the peer, which admits it in turn.
 *
 * Catch-up on (re)connect exchanges only what differs (docs/protocol-choices.md, "Federation
 * catch-up"): per-range digests of (template, node, seq, deleted) on the reserved topics
 * `qis/1/f/req/<linkClientId>` and `qis/1/f/res/<linkClientId>`; only ranges that differ are
 * listed, then each side sends the newer packets and signed tombstones the other lacks. A peer
 * that does not answer (Mosquitto) gets the full retained exchange instead.
 *
 * The parts, in broker/federation/ (docs/ARCHITECTURE.md, "Layout"): link.ts (connection, reconnect),
 * outbox.ts (forwarding, batching), retry.ts (transient refusals sent again), inbox.ts (admitting what a peer sends), catch-up.ts (the
 * catch-up protocol), digest.ts (digests, the stale check), serve.ts (answering a peer's
 * requests), mqtt.ts (MQTT steps, request/answer matching), metrics.ts, common.ts (topics, types).
 * Only `../src/index.js` and the broker's own modules are imported (test/boundaries.test.ts).
 */
import type { FederationOptions } from './options.js';
import type { Federation, FederationHost } from './federation/common.js';
import { Link } from './federation/link.js';
import { fedMetrics } from './federation/metrics.js';
export { kindOf, receivedCounter } from './federation/metrics.js';
import { answerPayload } from './federation/serve.js';

export {
  FEDERATION_PREFIX,
  FED_REQ,
  FED_RES,
  FORWARDED_PREFIXES,
  LINK_CLIENT_PREFIX,
  TRANSIENT_CODES,
  isRevocation,
  linkClientId,
  passes,
  regionOfLinkId,
  tplOf,
  type CatchUpReport,
  type Federation,
  type FederationHost,
  type LinkStatus,
  type PeerAdmission,
} from './federation/common.js';
export { RANGES, differingRanges, digest, digestReady, notNewer, storeDigest } from './federation/digest.js';
export { peerName } from './federation/link.js';
export { answerPayload, answerRequest, parsePut, type StoreKind } from './federation/serve.js';

/**
 * Starts the links of `options.peers` (they connect in the background, with backoff and jitter).
 * @example const fed = startFederation(options.federation, host)
 */
export function startFederation(options: FederationOptions, host: FederationHost): Federation {
  const metrics = fedMetrics(host.registry);
  const links = options.peers.map((p, i) => new Link(p, i, options, host, metrics));
  return {
    admitted(topic, payload, origin) {
      // Not back to the region it came from (PROTOCOL §8: regions exchange names), by whichever link.
      for (const l of links) if (origin === undefined || (l.name !== origin && l.region !== origin)) l.forward(topic, payload);
    },
    peerOfRegion: (region) => links.find((l) => l.region === region)?.peer,
    answer(clientId, payload) {
      const res = answerPayload(host.store, payload, host.scoreStore);
      if (!res) host.logger.warn({ clientId }, 'malformed federation catch-up request ignored');
      return res;
    },
    status: () => links.map((l) => l.status()),
    async catchUp() {
      await Promise.all(links.map((l) => l.catchUpNow()));
    },
    async close() {
      await Promise.all(links.map((l) => l.close()));
    },
  };
}
