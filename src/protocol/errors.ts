/**
 * The one error type of qis-mqtt. Every refusal anywhere (API, CLI, broker log, metrics label)
 * carries one of these stable string codes; README's error table lists them all and a test
 * keeps that table complete.
 */

/** Every code qis-mqtt can produce, and what it means (the README table is generated from the same words). */
export const ERROR_CODES = {
  ERR_INVALID_ARGUMENT: 'an API was called with an argument of the wrong type or range',
  ERR_CLI_USAGE: 'unknown command or flag, a missing required flag, or a flag value of the wrong form',
  ERR_INVALID_JSON: 'a JSON argument or file is not valid JSON',
  ERR_FILE_IO: 'a file could not be read or written',
  ERR_KEY_EXISTS: 'keygen refuses to overwrite an existing key file',
  ERR_KEY_FILE_INVALID: 'a key file is not the documented JSON form (64-hex secretKey and publicKey, 26-char nodeId)',
  ERR_KEY_PERMISSIONS: 'a key file can be read or written by group or others (must be mode 0600 or stricter)',
  ERR_KEY_MISMATCH: "a key file's publicKey or nodeId does not belong to its secretKey",
  ERR_TEMPLATE_PARSE: 'a template file is not valid YAML or JSON',
  ERR_TEMPLATE_INVALID: 'a template breaks a rule of PROTOCOL §3 (the message names the field)',
  ERR_FIELD_MISSING: 'a situation lacks a field the template routes on',
  ERR_FIELD_VALUE: "a situation's value does not fit its field (wrong type, NaN, not in the closed set, too long)",
  ERR_OUTCOME_INVALID: 'an outcome does not fit the template (unknown label, not a number, bad map)',
  ERR_PACKET_FIELD: 'a packet field given to the signer is out of range (conf, n, seq, ts, exp, ctx)',
  ERR_PACKET_EMPTY: 'a zero-length payload where a packet was expected (an MQTT retained delete)',
  ERR_PACKET_TOO_LARGE: 'an encoded packet is larger than 512 bytes',
  ERR_CBOR_MALFORMED: 'the bytes are not one well-formed CBOR item',
  ERR_COSE_MALFORMED: 'the CBOR is not a COSE_Sign1 message of the form PROTOCOL §5 requires',
  ERR_UNSUPPORTED_ALG: 'the protected header names an algorithm other than Ed25519 (-19) or EdDSA (-8)',
  ERR_PAYLOAD_INVALID: 'the payload map lacks a required key or has a value of the wrong type',
  ERR_UNSUPPORTED_VERSION: 'the payload version v is not 1',
  ERR_BAD_SIGNATURE: 'the Ed25519 signature does not verify over the topic-bound Sig_structure',
  ERR_TOPIC_INVALID: 'a topic is not a qis/1/o/<tplId>/<levels…>/<nodeId> outcome topic',
  ERR_NODE_MISMATCH: "the packet's key (kid) does not hash to the node id in its topic",
  ERR_FP_MISMATCH: "the packet's fingerprint is not the one expected for this cohort",
  ERR_EXPIRED: "the packet's exp has passed",
  ERR_TS_FUTURE: "the packet's ts is further in the future than the allowed clock skew",
  ERR_URL_INVALID: 'a broker URL is not mqtt://, mqtts://, ws:// or wss:// with a host',
  ERR_CONNECT_REFUSED: 'the broker refused the connection (the CONNACK return code is in the message)',
  ERR_SUBSCRIBE_DENIED: 'the broker refused a subscription (SUBACK 0x80)',
  ERR_TIMEOUT: 'an operation did not finish within its time limit',
  ERR_INCOMING_TOO_LARGE: "the broker sent an MQTT packet larger than the node's cap (maxPacketBytes); the node dropped the connection before buffering it",
  ERR_QUERY_TOO_LARGE: "a read of retained messages (query, scores, template) received more messages than the node's cap (maxQueryMessages); the read is abandoned",
  ERR_ABORTED: 'an operation was aborted through its AbortSignal',
  ERR_CLOSED: 'the node was closed while the operation was pending, or used after close',
  ERR_DATA_DIR_LOCKED: 'another live process is using the data directory',
  ERR_OUTBOX_ENTRY_INVALID: 'an outbox file is unreadable or not a packet of this node; it is moved aside as <name>.bad',
  ERR_SEQ_STALE: "a packet's seq is not above the seq the broker holds for its node and template (a replay or a resend): acknowledged and dropped",
  ERR_TEMPLATE_UNKNOWN: "the template id is not in the broker's closed registry",
  ERR_TEMPLATE_HASH: "a template document published on qis/1/t/<tplId> does not hash to tplId, or is not a valid template",
  ERR_RATE_LIMITED: 'a client published on qis/1/ faster than admission.ratePerSecond allows its authenticated identity (anonymous clients: their remote address, whatever client id they choose); the connection is closed',
  ERR_VERIFY_BUSY: 'the broker already had 16,384 packets awaiting signature verification; the publish is refused (the client reconnects and resends)',
  ERR_VERIFY_CONNECTION_BUSY: 'one connection (a client, a federation link) already had 1,024 packets awaiting signature verification at the broker, more than MQTT flow control lets it have; the publish is refused (the client reconnects and resends)',
  ERR_NOT_AUTHORIZED: "the ACL or the qis topic rules do not let this client publish or subscribe there",
  ERR_CLIENT_ID: "a zero-length client id with clean session false (MQTT 3.1.1 [MQTT-3.1.3-8])",
  ERR_CONFIG_INVALID: 'a broker or bridge config is invalid (the message names the file, the key and what was expected)',
  ERR_DELIVERY_REFUSED: 'the broker closed the connection when a packet was sent (its way to refuse it); after repeated refusals the packet is set aside as <name>.bad; the message names the packets and the likely reason (e.g. a clock far ahead of the broker\'s)',
  ERR_INTERNAL: 'an unexpected failure inside qis: a bug (the CLI prints its stack to stderr); please report it',
  // issue 6: firmware-bridge
  ERR_DEVICE_UNREACHABLE: 'a Modbus device refused or dropped the connection, or sent a malformed response; the bridge reconnects with backoff',
  ERR_MODBUS_EXCEPTION: 'a Modbus device answered with an exception response (illegal function, illegal data address…); logged with the device and code',
  ERR_SPARKPLUG_PAYLOAD: 'a Sparkplug B message is not a valid Sparkplug B protobuf payload, or its topic is not a Sparkplug B topic',
  // issue 7 section 1: the template registry
  ERR_TEMPLATE_NOT_FOUND: 'the broker holds no template document for the template id asked for',
  ERR_TEMPLATE_REFUSED: 'the broker closed the connection instead of acknowledging a template document (its way to refuse it; the broker log names the code)',
  // issue 7 §3 (Darwinism: scores)
  ERR_NO_PREDICTION: 'report(): the node holds no unscored prediction for this template and situation made before the observation (query first)',
  // issue 14: enrolment (PROTOCOL §10), node login (§11), password files
  ERR_ENROLMENT_INVALID: "an enrolment is not a CWT of PROTOCOL §10's form, or its operator signature does not verify",
  ERR_NOT_ENROLLED: 'no valid enrolment for this packet or login; the message starts with the reason: missing, invalid, key-mismatch, not-yet-valid, expired, out-of-scope, unknown-operator, revoked',
  ERR_REVOCATION_INVALID: 'a revocation list is not on qis/1/r/<operatorId> or its payload is not of PROTOCOL §10 form (node ids sorted, no duplicates)',
  ERR_REVOCATION_REFUSED: 'the broker closed the connection instead of acknowledging a revocation list (its log names the code: not a trusted operator, a seq check, a bad signature)',
  ERR_LOGIN_REFUSED: 'a CONNECT or a node login (PROTOCOL §11) was refused; the message starts with the reason: malformed, user-mismatch, bad-signature, client-id, stale (a node login), password, client-id-taken, anonymous (the broker, CONNACK 4 or 5)',
  ERR_PASSWORD_FILE_INVALID: 'a password file line is not user:scrypt$N$r$p$salt$hash, or a user name holds ":" or a line break',
  ERR_ADDRESS_IN_USE: 'a listen address (host and port) of the broker is already in use by another process',
  ERR_REGION_CONFLICT: 'a federation link joins two brokers with the same region name, or a second broker claims a region another identity already links as; the link is refused (CONNACK 5) until the names differ',
  // issue 16: delivery status, network errors
  ERR_NOTHING_TO_WITHDRAW: 'withdraw: this node never published a packet for that template (its state holds no bucket)',
  ERR_CONNECTION_REFUSED: 'nothing listens on the broker address (TCP connection refused); the runtime keeps retrying',
  ERR_HOST_NOT_FOUND: "the broker's host name does not resolve (DNS lookup failed); the runtime keeps retrying",
  ERR_TLS: "the TLS handshake with the broker failed (TLS to a plain port, plain to a TLS port, an untrusted or mismatched certificate); the message carries OpenSSL's reason",
  // issue 13: the broker's limits and MQTT conformance
  ERR_MQTT_PACKET_TOO_LARGE: "an MQTT packet announced more bytes than the broker's limits.maxPacketSize (limits.maxConnectPacketSize before CONNECT); the connection is closed before the packet is read",
  ERR_TOO_MANY_CONNECTIONS: 'a connection beyond limits.maxConnections or limits.maxConnectionsPerAddress (or faster than limits.connectRatePerSecond from one address); closed at once',
  ERR_CONNECT_TIMEOUT: 'a connection sent no CONNECT within limits.connectTimeoutMs; closed',
  ERR_KEEPALIVE_CAPPED: 'a client asked for keepalive 0 or above limits.maxKeepalive; the broker uses the cap (a silent client is dropped after 1.5× it)',
  ERR_TOO_MANY_SUBSCRIPTIONS: 'a client asked for more than limits.maxSubscriptionsPerClient subscriptions (SUBACK 0x80)',
  ERR_RETAINED_LIMIT: 'a retained message outside qis/1/ beyond limits.maxRetained or limits.maxRetainedBytes: delivered live, not kept',
  ERR_TOPIC_NAME_INVALID: 'a PUBLISH topic name holds U+0000 or is not valid UTF-8 (MQTT 3.1.1 §1.5.3, §4.7.3); the connection is closed',
  ERR_TOMBSTONE_LIMIT: 'a tombstone for a (template, node) the broker never held, beyond limits.maxColdFloors such floors: acknowledged, not kept',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * An error with a stable `code`. Compare on `code`, never on `message`.
 *
 * @example
 * try { verifyPacket(topic, bytes) } catch (e) {
 *   if (e instanceof QisError && e.code === 'ERR_BAD_SIGNATURE') dropped++
 * }
 */
export class QisError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QisError';
    this.code = code;
  }
}

/** Type guard that survives duplicate module instances (checks the shape, not the prototype). */
export function isQisError(e: unknown): e is QisError {
  const code = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}
