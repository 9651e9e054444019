/**
 * A failed connection attempt said in words a person can act on, at once (issue 16): refused
 * port, unknown host, TLS trouble (with OpenSSL's reason) each get their own code, as
 * mosquitto_sub does, instead of a timeout ten seconds later. The runtime keeps retrying.
 */
import { isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { QisError } from '../protocol/errors.js';

/** Node's certificate verification codes (tls.TLSSocket#authorizationError and friends). */
const CERT_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_HANDSHAKE_TIMEOUT',
]);

type NetError = Error & { code?: unknown; reason?: unknown; library?: unknown; hostname?: unknown };

function hostOf(url: string): string {
  try {
    const u = new URL(url);
    return u.port ? `${u.hostname}:${u.port}` : u.hostname;
  } catch {
    return url;
  }
}

/**
 * The QisError for a socket-level failure of a connection to `url`, or undefined when `err` is
 * none of these (a protocol error, a CONNACK refusal: said elsewhere).
 */
export function networkError(err: NetError, url: string): QisError | undefined {
  const code = typeof err.code === 'string' ? err.code : '';
  const where = hostOf(url);
  if (code === 'ECONNREFUSED') return new QisError('ERR_CONNECTION_REFUSED', `connection refused by ${where}: nothing listens there (is the broker running, is the port right?)`, { cause: err });
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_FAIL' || code === 'EAI_NONAME') {
    return new QisError('ERR_HOST_NOT_FOUND', `host ${typeof err.hostname === 'string' ? err.hostname : where} not found (DNS lookup: ${code})`, { cause: err });
  }
  if (CERT_CODES.has(code)) return new QisError('ERR_TLS', `TLS with ${where}: the broker's certificate is not trusted: ${err.message} (${code}; --ca FILE trusts a private CA)`, { cause: err });
  if (/^(mqtts|ssl|tls|wss):/i.test(url) && /before secure TLS connection was established/.test(err.message)) {
    return new QisError('ERR_TLS', `TLS with ${where}: the server closed the connection during the handshake: ${err.message} (a plain MQTT port? use mqtt:// for it)`, { cause: err });
  }
  if (code.startsWith('ERR_SSL_') || err.library === 'SSL routines') {
    const reason = typeof err.reason === 'string' ? err.reason : err.message;
    const hint = /wrong version number|packet length too long|record layer failure/i.test(reason) ? ' (is this a plain MQTT port? use mqtt:// for it)' : '';
    return new QisError('ERR_TLS', `TLS handshake with ${where} failed: ${reason}${hint}`, { cause: err });
  }
  return undefined;
}

/**
 * A plain mqtt:// connection closed before its CONNACK without a word: if the port completes a
 * TLS handshake, it is a TLS port (said as ERR_TLS). Only the handshake is tried (no certificate
 * check, nothing sent); undefined for anything else. Never rejects.
 */
export function probeTlsPort(url: string, timeoutMs = 2_000): Promise<QisError | undefined> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return Promise.resolve(undefined);
  }
  if (u.protocol !== 'mqtt:' && u.protocol !== 'tcp:') return Promise.resolve(undefined);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || 1883);
  return new Promise((resolve) => {
    const s = tlsConnect({ host, port, rejectUnauthorized: false, ...(isIP(host) ? {} : { servername: host }) });
    const end = (e: QisError | undefined): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(e);
    };
    const timer = setTimeout(() => end(undefined), timeoutMs);
    s.once('secureConnect', () => end(new QisError('ERR_TLS', `${hostOf(url)} closed a plain MQTT connection and speaks TLS (${s.getProtocol() ?? 'TLS'}): use mqtts:// for it`)));
    s.once('error', () => end(undefined));
  });
}
