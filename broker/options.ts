/**
 * The regional broker's options: what `createBroker()` takes and what a YAML config file
 * (`qis broker --config FILE`) or flags produce. One frozen defaults object, merged once.
 */

/** One network listener. */
export type ListenerOptions =
  | { readonly type: 'tcp'; readonly host: string; readonly port: number }
  | {
      readonly type: 'tls';
      readonly host: string;
      readonly port: number;
      /** PEM file paths. */
      readonly cert: string;
      readonly key: string;
      /** CA that signs client certificates; with `requestCert` the broker demands them (mTLS). */
      readonly ca?: string;
      readonly requestCert?: boolean;
    }
  | { readonly type: 'ws'; readonly host: string; readonly port: number; readonly path: string };

/** An ordered access rule for ordinary (non-`qis/1/`) topics: the first matching rule decides. */
export interface AclRule {
  readonly allow: boolean;
  /** MQTT filter the topic must match (`+`, `#`). */
  readonly topic: string;
  /** Only for these client ids (MQTT filter syntax on the id is not used: exact ids), default all. */
  readonly clients?: readonly string[];
  /** Only for these authenticated users (node ids of node logins, password-file users, certificate CNs), default all. An anonymous client matches no `users` rule. */
  readonly users?: readonly string[];
}

/**
 * Connection authentication (issue 14; PROTOCOL §11). `topic` of an ACL rule may hold `%u` (the
 * authenticated user) and `%c` (the client id); a rule with `%u` never matches an anonymous client.
 */
export interface AuthOptions {
  /**
   * Anonymous clients (no credentials the broker can check). Unset (the default): allowed on
   * loopback listeners (127.0.0.0/8, ::1, localhost), refused elsewhere; true/false: everywhere.
   */
  readonly allowAnonymous?: boolean;
  /** Password file (`qis broker passwd`): `user:scrypt$…` lines. Without it a username that is not a node login is ignored (the client is anonymous). */
  readonly passwordFile?: string;
  /** Node login (PROTOCOL §11): username = node id, password = login COSE. Default true. */
  readonly nodeLogin?: boolean;
  /** Largest |broker clock − login ts|, ms (default 300,000). */
  readonly loginSkewMs?: number;
  /**
   * Client ids a password or certificate user may connect with, `%u` = the user, a trailing `*` =
   * any suffix. Default ['%u', '%u:*']: user names cannot hold ':', so `alice:…` is alice's alone.
   */
  readonly clientIds?: readonly string[];
  /**
   * Federation peers by identity: the users (a peer broker's password-file user, certificate CN,
   * or node id of a node login) that may connect as links (`qis-fed-…` client ids) and use
   * `qis/1/f/`. Unset: any client allowed to connect may (as before issue 14).
   */
  readonly peers?: readonly string[];
}

export interface AdmissionOptions {
  /** How far `ts` may lie in the future, ms (PROTOCOL §6; default 5 minutes). */
  readonly maxSkewMs: number;
  /**
   * open: any template id. closed: only the ids in `templates`, and templates whose document is
   * signed by a key in `curators` (once that document is registered here).
   */
  readonly registry: 'open' | 'closed';
  readonly templates: readonly string[];
  /** Curator keys of a closed registry (issue 7): node ids (26 base32) or public keys (64 hex). */
  readonly curators: readonly string[];
  /**
   * Token bucket on `qis/1/` publishes per authenticated identity, or per remote address for
   * anonymous connections (never per client id, which a client chooses): sustained rate per
   * second and burst. 0 = off. server/publish-rate.ts.
   */
  readonly ratePerSecond: number;
  readonly burst: number;
  /**
   * PROTOCOL §10. off: any key (v1). required: outcome and score packets must carry a valid
   * enrolment by one of `operators` (ERR_NOT_ENROLLED with the reason otherwise).
   */
  readonly enrolment: 'off' | 'required';
  /** Trusted operators (operator ids, 26 base32 characters), for `enrolment: required`. */
  readonly operators: readonly string[];
}

/** One federation peer (issue 5): a link from this broker to another region's broker. */
export interface PeerOptions {
  /** mqtt:// or mqtts:// URL of the peer broker (a qis broker, or any MQTT 3.1.1 broker such as Mosquitto). */
  readonly url: string;
  /** Display name in logs and metric labels; default the URL's scheme, host and port. */
  readonly name?: string;
  /** TLS: PEM file paths (CA of the peer, client certificate and key for mTLS). */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly rejectUnauthorized?: boolean;
  readonly username?: string;
  /** A file whose content (trimmed) is the password. */
  readonly passwordFile?: string;
  /**
   * Who the peer is (issue 14): its broker key id (the node id of its `broker-key.json`, which its
   * links log in with, PROTOCOL §11), or the certificate CN or password user it links in with.
   * The link it opens to this broker is then known as this peer's, and this entry's share/accept
   * apply to it too; the identity may use federation as if listed in `auth.peers`.
   */
  readonly identity?: string;
  /** Template ids whose packets go to this peer; ['*'] (default): all. */
  readonly share: readonly string[];
  /** Template ids whose packets are taken from this peer; ['*'] (default): all. */
  readonly accept: readonly string[];
  /** Packets per second taken from this peer (beyond that they are dropped and fetched by a later catch-up); 0 (default): no limit. */
  readonly rateLimit: number;
}

export interface FederationOptions {
  /** This region's name (letters, digits, '.', '_', '-'): the links' client ids are qis-fed-<region>-<i>. */
  readonly region: string;
  readonly peers: readonly PeerOptions[];
  /** This broker's key (PROTOCOL §11 login of its links; its id names it in a peer's `auth.peers`), made at first start; default `<dataDir>/broker-key.json`. */
  readonly keyFile?: string;
  /** Link reconnect backoff with full jitter, ms (default base 500, cap 30,000). */
  readonly reconnect?: { readonly baseMs: number; readonly capMs: number };
  /** After a catch-up that exchanged packets, check again this much later, ms (default 0: never; live forwarding covers what arrives after a catch-up). */
  readonly followUpMs?: number;
  /**
   * How long a live 'put' batch waits for the peer's answer, ms (default 10,000). Past it the peer
   * is taken for dead: the link reconnects and catches up, so forwarding resumes instead of waiting
   * behind unanswered batches. Catch-up requests wait 30 s.
   */
  readonly putTimeoutMs?: number;
  /**
   * Addresses (besides the hosts of `peers`) whose clients may use federation: link client ids
   * (qis-fed-…) and qis/1/f/ topics. Everyone else is refused (ERR_NOT_AUTHORIZED): a region
   * that only answers links (a hub) lists its peers' addresses here. docs/security.md.
   */
  readonly linksFrom?: readonly string[];
}

/**
 * What one client, or all of them, may cost the broker (issue 13; docs/security.md). Named after
 * Mosquitto's knobs where one exists (max_packet_size, max_connections, max_keepalive,
 * retained limits). Every limit hit is counted in `qis_limit_hits_total{code}` and logged once
 * per episode.
 */
export interface LimitOptions {
  /** Largest MQTT packet accepted once connected, bytes of remaining length (Mosquitto max_packet_size); checked from the fixed header, before buffering. */
  readonly maxPacketSize: number;
  /** Largest packet accepted before CONNECT has been answered (the CONNECT itself), bytes. */
  readonly maxConnectPacketSize: number;
  /** Open MQTT connections over all listeners (Mosquitto max_connections). */
  readonly maxConnections: number;
  /** Open MQTT connections from one remote address. */
  readonly maxConnectionsPerAddress: number;
  /** Largest keepalive, seconds (Mosquitto max_keepalive): keepalive 0 or above is capped to it, so a silent client is dropped after 1.5× this. */
  readonly maxKeepalive: number;
  /** A connection that has not sent CONNECT within this is closed, ms. */
  readonly connectTimeoutMs: number;
  /** Subscriptions one client may hold; one more is refused (SUBACK 0x80). */
  readonly maxSubscriptionsPerClient: number;
  /** Retained messages held on ordinary (non-`qis/1/`) topics, in count and payload bytes; beyond, a new retained topic is delivered live but not kept. 0 count: retain off outside qis/1/. */
  readonly maxRetained: number;
  readonly maxRetainedBytes: number;
  /** A client whose socket stays full (it does not read) this long is disconnected, ms: bounds what is queued for it. */
  readonly drainTimeoutMs: number;
  /** Packets Aedes queues per client before its CONNECT is answered. */
  readonly queueLimit: number;
  /** New connections per second from one remote address (token bucket, burst `connectBurst`); 0: no limit. */
  readonly connectRatePerSecond: number;
  readonly connectBurst: number;
  /** `qis broker` on SIGTERM/SIGINT: a close not done within this exits anyway (logged), ms. */
  readonly shutdownGraceMs: number;
  /**
   * Cold floors the store keeps: tombstones of (template, node) keys that never held a packet
   * here, which anyone can mint for free. Beyond, such a tombstone is acknowledged and not kept
   * (ERR_TOMBSTONE_LIMIT); past the tombstone TTL they are forgotten. Floors of keys that held a
   * packet are kept for ever (PROTOCOL §6). docs/store.md, "Floors for keys never held".
   */
  readonly maxColdFloors: number;
}

export interface BrokerOptions {
  readonly listeners: readonly ListenerOptions[];
  /** Durable store directory (retained packets, index, templates). */
  readonly dataDir: string;
  /** always: PUBACK only after fdatasync (group commit); interval: every fsyncIntervalMs; never. */
  readonly fsync: 'always' | 'interval' | 'never';
  readonly fsyncIntervalMs: number;
  readonly admission: AdmissionOptions;
  /** Rules for ordinary topics; default: allow everything. `qis/1/` topics follow PROTOCOL §6. */
  readonly acl: {
    readonly publish: readonly AclRule[];
    readonly subscribe: readonly AclRule[];
    /**
     * A refused publish on an ordinary topic (ACL, `$…`): `drop` acknowledges it and delivers it
     * to nobody (Mosquitto's way; an auto-reconnecting client does not loop), `disconnect` closes
     * the connection. Refused `qis/1/` publishes always disconnect (the node must know).
     */
    readonly refusedPublish: 'drop' | 'disconnect';
  };
  readonly limits: LimitOptions;
  /** `/healthz` and Prometheus `/metrics`; omit to run without. */
  readonly http?: { readonly host: string; readonly port: number };
  readonly log: { readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  /** `redis://host:port`: several broker processes as one region (mqemitter-redis + Redis store). */
  readonly cluster?: string;
  /** Threads that verify signatures; 0 verifies on the main thread. Default: the machine's cores minus one (at least 1). */
  readonly verifyWorkers?: number;
  /**
   * Niceness of the verify threads, 0..19 (Linux; never below the broker's own, which they keep
   * when it is higher). Default 0: they share the cores with the main thread as equals. 19: the
   * main thread (MQTT, the store, ordinary traffic) goes first whenever the cores are short, which
   * lets `verifyWorkers` take every core (README, where the broker's verify threads are described).
   */
  readonly verifyNice?: number;
  /**
   * Verifications a second the main thread may run itself while the verify threads are idle
   * (default 2,000; 0: never). A packet arriving alone then skips the round trip to a thread
   * (README, where the broker's verify threads are described).
   */
  readonly verifyInline?: number;
  /** How often packets past their `exp` are swept, ms. */
  readonly sweepIntervalMs: number;
  /** Broker id (Aedes id, log field); default random. */
  readonly id?: string;
  /** Links to other regions' brokers (docs/protocol-choices.md, "Federation"). Default: none. */
  readonly federation?: FederationOptions;
  /** Who may connect (node login, password file, mTLS, anonymous). Default: {} (see {@link AuthOptions}). */
  readonly auth?: AuthOptions;
}

/** Every key of {@link BrokerOptions} has this default unless noted. */
export const BROKER_DEFAULTS: BrokerOptions = Object.freeze({
  listeners: Object.freeze([Object.freeze({ type: 'tcp' as const, host: '127.0.0.1', port: 1883 })]),
  dataDir: './qis-broker-data',
  fsync: 'always' as const,
  fsyncIntervalMs: 100,
  admission: Object.freeze({ maxSkewMs: 300_000, registry: 'open' as const, templates: Object.freeze([]), curators: Object.freeze([]), ratePerSecond: 1_000, burst: 10_000, enrolment: 'off' as const, operators: Object.freeze([]) }),
  acl: Object.freeze({ publish: Object.freeze([]), subscribe: Object.freeze([]), refusedPublish: 'drop' as const }),
  limits: Object.freeze({
    maxPacketSize: 1_048_576,
    maxConnectPacketSize: 16_384,
    maxConnections: 10_000,
    maxConnectionsPerAddress: 1_000,
    maxKeepalive: 300,
    connectTimeoutMs: 10_000,
    maxSubscriptionsPerClient: 1_000,
    maxRetained: 10_000,
    maxRetainedBytes: 67_108_864,
    drainTimeoutMs: 30_000,
    queueLimit: 42,
    connectRatePerSecond: 0,
    connectBurst: 100,
    shutdownGraceMs: 10_000,
    maxColdFloors: 100_000,
  }),
  log: Object.freeze({ level: 'info' as const }),
  sweepIntervalMs: 60_000,
});

/** A partial, nested override of the defaults (what a config file or createBroker's caller gives). */
export type BrokerConfig = {
  readonly [K in keyof BrokerOptions]?: BrokerOptions[K] extends readonly unknown[]
    ? BrokerOptions[K]
    : BrokerOptions[K] extends object | undefined
      ? Partial<NonNullable<BrokerOptions[K]>>
      : BrokerOptions[K];
};
