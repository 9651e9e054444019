/**
 * What every part of the federation shares: the reserved topics and client ids, the interfaces
 * between a broker and its links, and the share/accept rule.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { parseOutcomeTopic, type ErrorCode } from '../../src/index.js';
import type { Store } from '../store.js';

/** The qis/1 prefixes a link forwards (both directions): outcome packets, template documents, score packets (§9), revocation lists (§10). */
export const FORWARDED_PREFIXES: readonly string[] = Object.freeze(['qis/1/o/', 'qis/1/t/', 'qis/1/s/', 'qis/1/r/']);
/** Reserved for links: catch-up requests and responses. */
export const FEDERATION_PREFIX = 'qis/1/f/';
export const FED_REQ = 'qis/1/f/req/';
export const FED_RES = 'qis/1/f/res/';
/** Client ids of links start with this; a qis broker sends them no retained outcome packets at subscribe (catch-up does that). */
export const LINK_CLIENT_PREFIX = 'qis-fed-';

/** What admission made of a packet received from a peer. */
export type PeerAdmission = { readonly result: 'stored' | 'stale' } | { readonly result: 'refused'; readonly code: ErrorCode; readonly message: string };

/** What a broker gives its federation. */
export interface FederationHost {
  readonly store: Store;
  /** Score packets (qis/1/s/, §9), filed under outcome-shaped keys; caught up as a second store (`store: 's'` in requests). */
  readonly scoreStore?: Store;
  readonly logger: Logger;
  readonly registry: Registry;
  /** Runs a received packet through admission, then delivers it to local subscribers; `origin` is the link it came from. */
  admit(topic: string, payload: Buffer, origin: string): Promise<PeerAdmission>;
  /** Template documents this broker holds (topic qis/1/t/<tplId> → signed bytes). */
  templates(): Iterable<[string, Uint8Array]>;
  /** Operators' revocation lists this broker holds (topic qis/1/r/<operatorId> → signed bytes), sent on every connection like templates. */
  revocations?(): Iterable<[string, Uint8Array]>;
  now(): number;
}

export interface Federation {
  /** Called by the broker after it admitted and stored a packet (or a tombstone, or a new template document). */
  admitted(topic: string, payload: Uint8Array, origin: string | undefined): void;
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
