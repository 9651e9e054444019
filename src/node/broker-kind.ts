/**
 * What kind of broker a client talks to, which decides how it knows a query's retained messages
 * are all in (PROTOCOL §7): shared by the node runtime and the registry client.
 */

/** How a broker orders a query's sync marker (PROTOCOL §7). */
export type BrokerKind = 'qis' | 'mosquitto' | 'unknown';

/** The retained topic where a qis broker says what it is (docs/protocol-choices.md). */
export const BROKER_INFO_TOPIC = 'qis/1/broker';
/** Mosquitto's retained version topic; an ACL may deny it, which only rules out recognising Mosquitto. */
export const MOSQUITTO_VERSION_TOPIC = '$SYS/broker/version';
/** How long a client waits for its broker-kind sync marker before treating the broker as unknown. */
export const DETECT_TIMEOUT_MS = 2_000;
