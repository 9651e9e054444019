/**
 * What every part of the federation shares: the reserved topics and client ids, the interfaces
 * between a broker and its links, and the share/accept rule.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { parseOutcomeTopic, type ErrorCode, type NodeKey } from '../../src/index.js';
import type { PeerOptions } from '../options.js';
import type { Store } from '../store.js';

/** The qis/1 prefixes a link forwards (both directions): outcome packets, template documents, score packets (§9), revocation lists (§10). */
export const FORWARDED_PREFIXES: readonly string[] = Object.freeze(['qis/1/o/', 'qis/1/t/', 'qis/1/s/', 'qis/1/r/']);
/** Reserved for links: catch-up requests and responses. */
export const FEDERATION_PREFIX = 'qis/1/f/';
export const FED_REQ = 'qis/1/f/req/';
export const FED_RES = 'qis/1/f/res/';
/** Client ids of links start with this; a qis broker sends them no retained outcome packets at subscribe (catch-up does that). */
export const LINK_CLIENT_PREFIX = 'qis-fed-';

/** A link's client id: it names the region that opened it (PROTOCOL §8: regions exchange names). */
export function linkClientId(region: string, i: number): string {
  return `${LINK_CLIENT_PREFIX}${region}-${i}`;
}

/** The region a link client id names (`qis-fed-<region>-<i>`), or undefined for another id. */
export function regionOfLinkId(clientId: string): string | undefined {
  const m = /^qis-fed-([A-Za-z0-9._-]{1,64})-\d+$/.exec(clientId);
  return m?.[1];
}

/** Refusal codes that say "later" rather than "never": a forward refused with one is sent again (PROTOCOL §8). */
export const TRANSIENT_CODES: ReadonlySet<string> = new Set(['ERR_RATE_LIMITED', 'ERR_TS_FUTURE']);

/** What admission made of a packet received from a peer. */
export type PeerAdmission = { readonly result: 'stored' | 'stale' } | { readonly result: 'refused'; readonly code: ErrorCode; readonly message: string };

/** What a broker gives its federation. */
export interface FederationHost {
  readonly store: Store;
  /** Score packets (qis/1/s/, §9), filed under outcome-shaped keys; caught up as a second store (`store: 's'` in requests). */
  readonly scoreStore?: Store;
  readonly logger: Logger;
  readonly registry: Registry;
  /** Runs a received packet through admission, then delivers it to local subscribers; `origin` is the region it came from (or the link's name while its region is unknown). */
  admit(topic: string, payload: Buffer, origin: string): Promise<PeerAdmission>;
  /** This broker's key: links log in with it (PROTOCOL §11) unless their peer entry gives a user name or client certificate. */
  readonly key?: NodeKey;
  /** Template documents this broker holds (topic qis/1/t/<tplId> → signed bytes). */
  templates(): Iterable<[string, Uint8Array]>;
  /** Operators' revocation lists this broker holds (topic qis/1/r/<operatorId> → signed bytes), sent on every connection like templates. */
  revocations?(): Iterable<[string, Uint8Array]>;
  now(): number;
}

export interface Federation {
  /** Called by the broker after it admitted and stored a packet (or a tombstone, or a new template document); not sent back to the `origin` region. */
  admitted(topic: string, payload: Uint8Array, origin: string | undefined): void;
  /** The peer entry of the link that reached a broker of `region` (learned from its qis/1/broker), if any. */
  peerOfRegion(region: string): PeerOptions | undefined;
  /** A catch-up request from a link client of a peer: returns the response payload. */
  answer(clientId: string, payload: Buffer): Buffer | undefined;
  /** Link states (for tests and /healthz). */
  status(): LinkStatus[];
  /** Starts a catch-up on every connected link now; resolves when they finished. */
  catchUp(): Promise<void>;
  close(): Promise<void>;
}

export interface LinkStatus {
  readonly peer: string;
  readonly connected: boolean;
  /** 'qis' (digest catch-up), 'mqtt' (full retained exchange), or unknown before the first connection. */
  readonly peerKind: 'qis' | 'mqtt' | 'unknown';
  /** The peer's region, as its qis/1/broker says (unknown for a non-qis peer). */
  readonly region?: string;
  /** Why the link is not working (ERR_REGION_CONFLICT: the peer has this broker's region name). */
  readonly error?: ErrorCode;
  /** Forwards the peer refused for a transient reason, waiting to be sent again. */
  readonly retrying: number;
  readonly catchUps: number;
  readonly lastCatchUp?: CatchUpReport;
  /** The last 8 catch-ups, oldest first. */
  readonly history: readonly CatchUpReport[];
}

export interface CatchUpReport {
  readonly mode: 'digest' | 'full';
  /** Payload bytes of the catch-up exchange in both directions (digests, lists, packets). */
  readonly bytes: number;
  /** Packets received from the peer, and sent to it. */
  readonly received: number;
  readonly sent: number;
  readonly ms: number;
}

/** True when `tplId` passes a share/accept list ('*' = every template). */
export function passes(list: readonly string[], tplId: string): boolean {
  return list.includes('*') || list.includes(tplId);
}

/** Revocation lists (qis/1/r/<operatorId>) belong to no template: every link carries them, whatever its share/accept. */
export function isRevocation(topic: string): boolean {
  return topic.startsWith('qis/1/r/');
}

/** The template id of a forwarded topic: qis/1/o/<tplId>/…, qis/1/t/<tplId>, qis/1/s/<tplId>/<nodeId>. */
export function tplOf(topic: string): string | undefined {
  if (topic.startsWith('qis/1/o/')) return safeTpl(topic);
  if (topic.startsWith('qis/1/s/')) return topic.split('/')[3];
  return topic.slice('qis/1/t/'.length);
}

function safeTpl(topic: string): string | undefined {
  try {
    return parseOutcomeTopic(topic).tplId;
  } catch {
    return undefined;
  }
}
