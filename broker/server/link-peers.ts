/**
 * The links other regions opened to this broker (PROTOCOL §8): which region and which peer entry
 * each belongs to, so this side applies its own `share` (what it delivers to that link) and
 * `accept` (what it takes from that link's batches) whoever opened the link; a packet is not
 * delivered back to the region it came from; and two brokers claiming one region name get
 * ERR_REGION_CONFLICT instead of taking the link id from each other in turn.
 *
 * A link's region is the one its client id names (`qis-fed-<region>-<i>`). Its peer entry is the
 * one whose `identity` is the link's authenticated user (its broker key id, certificate CN or
 * password user); failing that, the entry whose own link reached a broker of that region (weaker:
 * the region name is then only as trustworthy as the federation gate, docs/security.md). A link
 * matching no entry (a hub answering links it does not open) gets share and accept `*`.
 */
import type { Client } from 'aedes';
import { FORWARDED_PREFIXES, isRevocation, passes, regionOfLinkId, tplOf } from '../federation.js';
import type { AuthOptions, PeerOptions } from '../options.js';
import type { AuthVerdict, Identity } from './auth.js';
import type { BrokerContext } from './context.js';

/** Which region and peer entry a link client belongs to (peer undefined: no entry names it). */
export interface InboundLink {
  readonly region: string | undefined;
  readonly peer: PeerOptions | undefined;
}

const ALL: readonly string[] = Object.freeze(['*']);

/** The region a packet admitted from a peer came from, keyed by its payload (Aedes hands the same Buffer to every delivery). */
const origins = new WeakMap<object, string>();

/** Marks a peer's packet before it is published to local subscribers, so no link of `region` gets it back. */
export function tagOrigin(payload: Buffer, region: string): void {
  origins.set(payload, region);
}

/**
 * Why a link client id may not connect (undefined: it may): it names this broker's own region
 * `own`, or a region a live link of another identity holds (`heldBy`): two brokers given one
 * region name, which would otherwise knock each other off in turn.
 */
export function regionConflict(c: { own: string | undefined; clientId: string; user: string | undefined; heldBy?: { user: string | undefined } }): string | undefined {
  const region = regionOfLinkId(c.clientId);
  if (region === undefined) return undefined;
  if (region === c.own) return `link ${c.clientId} names this broker's own region ${JSON.stringify(region)}; give each region its own name`;
  if (c.heldBy && c.heldBy.user !== c.user) {
    return `region ${JSON.stringify(region)} is linked already by ${c.heldBy.user ?? 'an anonymous client'}; ${c.user ?? 'an anonymous client'} claims it too (two brokers with one region name)`;
  }
  return undefined;
}

class LinkPeers {
  readonly #ctx: BrokerContext;
  /** The live link of each region and who it authenticated as. */
  readonly #held = new Map<string, { client: Client; user: string | undefined }>();

  constructor(ctx: BrokerContext) {
    this.#ctx = ctx;
  }

  /** The region and peer entry of a link client (both undefined for a client that is not a link). */
  of(client: Client | null): InboundLink {
    const region = client ? regionOfLinkId(client.id) : undefined;
    if (!client || region === undefined) return { region: undefined, peer: undefined };
    const user = this.#ctx.auth.user(client);
    const peers = this.#ctx.options.federation?.peers ?? [];
    const peer = (user !== undefined ? peers.find((p) => p.identity === user) : undefined) ?? this.#ctx.federation?.peerOfRegion(region);
    return { region, peer };
  }

  /** At CONNECT of a link client id: its region is not this broker's, nor held by a live link of another identity. */
  connectCheck(client: Client, identity: Identity): AuthVerdict {
    const region = regionOfLinkId(client.id);
    if (region === undefined) return { ok: true, identity };
    const held = this.#held.get(region);
    const live = held && held.client !== client && (held.client as Client & { closed?: boolean }).closed !== true ? held : undefined;
    const why = regionConflict({ own: this.#ctx.options.federation?.region, clientId: client.id, user: identity.user, ...(live ? { heldBy: { user: live.user } } : {}) });
    if (why !== undefined) return { ok: false, returnCode: 5, code: 'ERR_REGION_CONFLICT', reason: 'region-conflict', message: `region-conflict: ${why}` };
    this.#held.set(region, { client, user: identity.user });
    return { ok: true, identity };
  }

  /** Whether a message on `topic` goes to link client `client` (live delivery): this side's share, and never back to its origin. */
  delivers(client: Client, topic: string, payload: unknown): boolean {
    if (!FORWARDED_PREFIXES.some((x) => topic.startsWith(x))) return true;
    const link = this.of(client);
    if (link.region !== undefined && typeof payload === 'object' && payload !== null && origins.get(payload) === link.region) return false;
    const share = link.peer?.share ?? ALL;
    // A delivered topic was admitted (well formed): with a share of '*' it need not be parsed again.
    return share.includes('*') || this.passes(share, topic);
  }

  /** Whether a packet on `topic` passes `list` (revocation lists belong to no template and always pass). */
  passes(list: readonly string[], topic: string): boolean {
    if (isRevocation(topic)) return true;
    const tplId = tplOf(topic);
    return tplId !== undefined && passes(list, tplId);
  }
}

const all = new WeakMap<BrokerContext, LinkPeers>();

/** The broker's view of the links opened to it (made on first use). */
export function linkPeers(ctx: BrokerContext): LinkPeers {
  let l = all.get(ctx);
  if (!l) all.set(ctx, (l = new LinkPeers(ctx)));
  return l;
}

/**
 * `auth` with the identities of `federation.peers` added to a set `auth.peers`: a peer configured
 * by identity need not be listed twice. (Unset `auth.peers` stays unset: any client the federation
 * gate lets through may link.)
 */
export function withPeerIdentities(auth: AuthOptions | undefined, peers: readonly PeerOptions[] | undefined): AuthOptions | undefined {
  const ids = (peers ?? []).map((p) => p.identity).filter((x): x is string => x !== undefined);
  if (ids.length === 0 || auth?.peers === undefined) return auth;
  return { ...auth, peers: [...new Set([...(auth?.peers ?? []), ...ids])] };
}
