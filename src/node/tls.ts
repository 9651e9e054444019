/** TLS settings of an MQTT connection (node runtime, registry client). */
import type { IClientOptions } from 'mqtt';

/** mqtt.js connection options for {@link TlsOptions} (only the members given). */
export function tlsClientOptions(tls: TlsOptions | undefined): Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'servername'> {
  return {
    ...(tls?.ca !== undefined ? { ca: Buffer.from(tls.ca) } : {}),
    ...(tls?.cert !== undefined ? { cert: Buffer.from(tls.cert) } : {}),
    ...(tls?.key !== undefined ? { key: Buffer.from(tls.key) } : {}),
    ...(tls?.rejectUnauthorized !== undefined ? { rejectUnauthorized: tls.rejectUnauthorized } : {}),
    ...(tls?.servername !== undefined ? { servername: tls.servername } : {}),
  };
}

/** TLS settings for mqtts:// and wss:// brokers. */
export interface TlsOptions {
  /** PEM of the CA(s) that signed the broker's certificate. */
  readonly ca?: string | Uint8Array;
  /** PEM client certificate and key, for brokers that require mTLS. */
  readonly cert?: string | Uint8Array;
  readonly key?: string | Uint8Array;
  /** Default true. false accepts any broker certificate: for tests only. */
  readonly rejectUnauthorized?: boolean;
  /** TLS SNI / certificate host name, when it differs from the URL's host. */
  readonly servername?: string;
}
