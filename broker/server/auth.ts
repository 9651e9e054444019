/**
 * Connection authentication (issue 14): who a CONNECT is. In order: a node login (PROTOCOL §11:
 * username = node id, password = the login COSE, checked against the broker's clock), a user of
 * the password file, the subject CN of a client certificate the TLS listener verified (mTLS), or
 * anonymous — allowed by `auth.allowAnonymous`, or when unset on loopback listeners only.
 *
 * The identity binds the client id: a node login signs its client id; a password or certificate
 * user may only use the ids of `auth.clientIds` (default `%u` and `%u:*`); and no connection takes
 * over a live client id held by another identity. Pure decisions here; connect.ts carries them out.
 */
import type { Client } from 'aedes';
import type { TLSSocket } from 'node:tls';
import { DEFAULT_SKEW_MS, isNodeId, verifyLogin } from '../../src/index.js';
import { LINK_CLIENT_PREFIX } from '../federation/common.js';
import type { AuthOptions, ListenerOptions } from '../options.js';
import { readPasswdFile, verifyPassword, type PasswdEntries } from '../passwd.js';

/** How a client proved who it is. */
export type AuthKind = 'node' | 'password' | 'certificate' | 'anonymous';

export interface Identity {
  readonly kind: AuthKind;
  /** The user ACL rules see (`users`, `%u`): the node id, the password-file user or the certificate CN; none when anonymous. */
  readonly user?: string;
}

/** Why a CONNECT is refused: CONNACK 4 (bad user name or password) or 5 (not authorized). */
export interface AuthRefusal {
  readonly returnCode: 4 | 5;
  readonly code: 'ERR_LOGIN_REFUSED' | 'ERR_REGION_CONFLICT';
  /** Stable, for logs and tests: the node login's reasons, and password, client-id, client-id-taken, anonymous. */
  readonly reason: string;
  readonly message: string;
}

export type AuthVerdict = { readonly ok: true; readonly identity: Identity } | ({ readonly ok: false } & AuthRefusal);

/** What a CONNECT shows: its credentials, its client id, and where it came in. */
export interface ConnectFacts {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly password: Uint8Array | undefined;
  /** The listener the connection came in on (undefined: unknown, treated as not loopback). */
  readonly listener: ListenerOptions | undefined;
  /** The subject CN of a client certificate the TLS layer verified. */
  readonly certificateUser: string | undefined;
}

export const DEFAULT_CLIENT_IDS: readonly string[] = Object.freeze(['%u', '%u:*']);

const refuse = (returnCode: 4 | 5, reason: string, message: string): AuthVerdict => ({ ok: false, returnCode, code: 'ERR_LOGIN_REFUSED', reason, message: `${reason}: ${message}` });

/** True for a listener bound to a loopback address only. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(h);
}

/** Whether `clientId` is one of `patterns` for `user` (`%u` = the user; a trailing `*` = any suffix). */
export function clientIdAllowed(patterns: readonly string[], user: string, clientId: string): boolean {
  return patterns.some((p) => {
    const open = p.endsWith('*');
    const fixed = (open ? p.slice(0, -1) : p).replaceAll('%u', user);
    return open ? clientId.startsWith(fixed) : clientId === fixed;
  });
}

/** The subject CN of the verified client certificate of a TLS connection, if any. */
export function certificateUserOf(conn: unknown): string | undefined {
  const tls = conn as Partial<TLSSocket> | undefined;
  if (!tls || typeof tls.getPeerCertificate !== 'function' || tls.authorized !== true) return undefined;
  const cn = tls.getPeerCertificate().subject?.CN;
  const name = Array.isArray(cn) ? cn[0] : cn;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** One broker's authentication: its options, its password file, and who each connected client is. */
export class Authenticator {
  #o: AuthOptions;
  #passwd: PasswdEntries | undefined;
  readonly #who = new WeakMap<Client, Identity>();

  private constructor(o: AuthOptions, passwd: PasswdEntries | undefined) {
    this.#o = o;
    this.#passwd = passwd;
  }

  /** Reads the password file once. @throws QisError ERR_FILE_IO | ERR_PASSWORD_FILE_INVALID */
  static async open(o: AuthOptions = {}): Promise<Authenticator> {
    return new Authenticator(o, o.passwordFile === undefined ? undefined : await readPasswdFile(o.passwordFile));
  }

  /**
   * Reload (SIGHUP): new CONNECTs are checked against `o` and its password file, read again;
   * connected clients keep the identity they logged in with. Nothing changes when the file is bad.
   * @throws QisError ERR_FILE_IO | ERR_PASSWORD_FILE_INVALID
   */
  async reload(o: AuthOptions = {}): Promise<void> {
    const passwd = o.passwordFile === undefined ? undefined : await readPasswdFile(o.passwordFile);
    this.#o = o;
    this.#passwd = passwd;
  }

  /** Who a CONNECT is, or why it is refused. Never throws on hostile input. */
  async check(c: ConnectFacts, now: number): Promise<AuthVerdict> {
    const { username, password } = c;
    if (username !== undefined && username !== '') {
      if (this.#o.nodeLogin !== false && isNodeId(username) && password !== undefined) {
        const v = verifyLogin({ username, password, clientId: c.clientId }, { now, skewMs: this.#o.loginSkewMs ?? DEFAULT_SKEW_MS });
        if (!v.ok) return refuse(v.reason === 'client-id' ? 5 : 4, v.reason, v.message.replace(/^[a-z-]+: /, ''));
        return { ok: true, identity: { kind: 'node', user: v.nodeId } };
      }
      if (this.#passwd !== undefined) {
        if (password === undefined || !(await verifyPassword(this.#passwd, username, password))) return refuse(4, 'password', `user ${JSON.stringify(username)}: wrong user name or password`);
        return this.#bound({ kind: 'password', user: username }, c.clientId);
      }
      // A user name nothing here can check names nobody: the client is anonymous (as in Mosquitto without a password file).
    }
    if (c.certificateUser !== undefined) return this.#bound({ kind: 'certificate', user: c.certificateUser }, c.clientId);
    const allowed = this.#o.allowAnonymous ?? (c.listener !== undefined && isLoopbackHost(c.listener.host));
    if (!allowed) return refuse(5, 'anonymous', `anonymous clients are refused on this listener (${c.listener ? `${c.listener.type}://${c.listener.host}:${c.listener.port}` : 'unknown'}); log in, or set auth.allowAnonymous`);
    return { ok: true, identity: { kind: 'anonymous' } };
  }

  /**
   * Whether this client may act as a federation link: its id is a link id and, with `auth.peers`,
   * its authenticated user is a listed peer.
   */
  isPeer(clientId: string, identity: Identity | undefined): boolean {
    if (!clientId.startsWith(LINK_CLIENT_PREFIX)) return false;
    const peers = this.#o.peers;
    return peers === undefined || (identity?.user !== undefined && peers.includes(identity.user));
  }

  #bound(identity: Identity & { user: string }, clientId: string): AuthVerdict {
    if (this.isPeer(clientId, identity) && this.#o.peers !== undefined) return { ok: true, identity };
    const patterns = this.#o.clientIds ?? DEFAULT_CLIENT_IDS;
    if (!clientIdAllowed(patterns, identity.user, clientId)) {
      return refuse(5, 'client-id', `user ${JSON.stringify(identity.user)} may use client ids ${patterns.map((p) => p.replaceAll('%u', identity.user)).join(', ')}, not ${JSON.stringify(clientId)}`);
    }
    return { ok: true, identity };
  }

  /**
   * A live client holding the id under another identity keeps it: otherwise MQTT's takeover rule
   * would let anyone disconnect a node by connecting with its client id.
   */
  /** A link client id (`qis-fed-…`) is for configured peers only (`auth.peers`). */
  peerCheck(clientId: string, identity: Identity): AuthVerdict {
    if (!clientId.startsWith(LINK_CLIENT_PREFIX) || this.isPeer(clientId, identity)) return { ok: true, identity };
    return refuse(5, 'not-a-peer', `client id ${JSON.stringify(clientId)} is a federation link id; ${identity.user === undefined ? 'an anonymous client' : `user ${JSON.stringify(identity.user)}`} is not in auth.peers`);
  }

  takeover(existing: Client | undefined, identity: Identity): AuthVerdict {
    const held = existing === undefined ? undefined : this.#who.get(existing);
    if (held === undefined || (held.kind === identity.kind && held.user === identity.user)) return { ok: true, identity };
    return refuse(5, 'client-id-taken', `client id ${JSON.stringify(existing?.id)} is held by another identity`);
  }

  remember(client: Client, identity: Identity): void {
    this.#who.set(client, identity);
  }

  /** The identity a connected client authenticated as (undefined before its CONNECT was accepted). */
  identity(client: Client | null): Identity | undefined {
    return client === null ? undefined : this.#who.get(client);
  }

  /** The authenticated user of a client, for the ACL (undefined: anonymous). */
  user(client: Client | null): string | undefined {
    return this.identity(client)?.user;
  }
}
