/**
 * Who may use federation (issue 13): link client ids (qis-fed-…) and qis/1/f/ topics are for the
 * configured peers, not a public service. With `auth.peers` set, a peer is an authenticated
 * identity on that list using a link client id (auth.ts `isPeer`: password, certificate or node
 * login). Without it, a peer is recognised by the address its connection comes from: the
 * addresses its URL in `federation.peers` resolves to, or one listed in `federation.linksFrom`.
 * That is weaker than a credential (a host shared with a peer, or a spoofing-capable network,
 * passes): docs/security.md says so. A broker without federation and without `auth.peers`
 * refuses everyone.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Client } from 'aedes';
import type { BrokerContext } from './context.js';

/** How often the peers' host names are looked up again (addresses change). */
const RESOLVE_EVERY_MS = 60_000;

/** An IPv4 address reached over IPv6 (::ffff:a.b.c.d) is that IPv4 address. */
const plain = (a: string): string => (a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a);

export class PeerGate {
  readonly #names: string[] = [];
  readonly #fixed = new Set<string>();
  #resolved = new Set<string>();
  #resolvedAt = Number.NEGATIVE_INFINITY;
  readonly #now: () => number;
  readonly #ctx: BrokerContext;

  constructor(ctx: BrokerContext) {
    this.#ctx = ctx;
    this.#now = ctx.now;
    const f = ctx.options.federation;
    for (const a of f?.linksFrom ?? []) this.#fixed.add(plain(a));
    for (const p of f?.peers ?? []) {
      let host: string;
      try {
        host = new URL(p.url).hostname.replace(/^\[(.*)\]$/, '$1');
      } catch {
        continue; // config checked it already
      }
      if (isIP(host) !== 0) this.#fixed.add(plain(host));
      else this.#names.push(host);
    }
    this.#refresh();
  }

  /** Whether `client` (null: the broker itself) may use federation. */
  allows(client: Client | null): boolean {
    if (client === null) return true;
    if (this.#ctx.options.auth?.peers !== undefined) return this.#ctx.auth.isPeer(client.id, this.#ctx.auth.identity(client));
    const remote = (client.conn as { remoteAddress?: string } | undefined)?.remoteAddress;
    if (remote === undefined) return false;
    const a = plain(remote);
    if (this.#fixed.has(a) || this.#resolved.has(a)) return true;
    this.#refresh(); // a peer's address may have changed: look again (at most once a minute)
    return false;
  }

  #refresh(): void {
    if (this.#names.length === 0 || this.#now() - this.#resolvedAt < RESOLVE_EVERY_MS) return;
    this.#resolvedAt = this.#now();
    void Promise.all(this.#names.map((n) => lookup(n, { all: true }).then((as) => as.map((x) => plain(x.address)), () => [] as string[]))).then((lists) => {
      this.#resolved = new Set(lists.flat());
    });
  }
}

const gates = new WeakMap<BrokerContext, PeerGate>();

/** The broker's gate (made on first use, from its federation options). */
export function peerGate(ctx: BrokerContext): PeerGate {
  let g = gates.get(ctx);
  if (!g) gates.set(ctx, (g = new PeerGate(ctx)));
  return g;
}
