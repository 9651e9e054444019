// Test certificates made with openssl at test time: a self-signed server certificate for
// localhost/127.0.0.1, a client CA and a client certificate it signed.
import type { Test } from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './run.js';

/** The openssl command, or a failure naming the Debian package. */
function openssl(): string {
  for (const d of [...(process.env['PATH'] ?? '').split(':'), '/usr/bin']) if (d && existsSync(join(d, 'openssl'))) return join(d, 'openssl');
  throw new Error('openssl not found: install the Debian package openssl (apt-get install openssl); TLS tests make their certificates with it');
}

async function ossl(t: Test, args: string[]): Promise<void> {
  const r = await run(openssl(), args);
  t.equal(r.status, 0, r.status === 0 ? `openssl ${args.slice(0, 2).join(' ')}` : `openssl ${args.join(' ')}: ${r.stderr}`);
}

/** Makes a self-signed server certificate for localhost/127.0.0.1, a client CA and a client certificate. */
export async function certificates(t: Test, dir: string): Promise<Record<'cert' | 'key' | 'ca' | 'caKey' | 'clientCert' | 'clientKey', string>> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const f = {
    cert: join(dir, 'c.pem'),
    key: join(dir, 'k.pem'),
    ca: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
  };
  await ossl(t, ['req', '-x509', ...ec, '-keyout', f.key, '-out', f.cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1']);
  await ossl(t, ['req', '-x509', ...ec, '-keyout', f.caKey, '-out', f.ca, '-days', '1', '-subj', '/CN=qis test client CA']);
  const csr = join(dir, 'client.csr');
  await ossl(t, ['req', ...ec, '-keyout', f.clientKey, '-out', csr, '-subj', '/CN=qis-node']);
  await ossl(t, ['x509', '-req', '-in', csr, '-CA', f.ca, '-CAkey', f.caKey, '-CAcreateserial', '-out', f.clientCert, '-days', '1']);
  return f;
}
