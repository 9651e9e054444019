/**
 * A node's enrolment in its data directory (PROTOCOL §10): `<dataDir>/enrolment.cbor`, installed
 * by `qis enrol --install`, attached by the node to every packet it signs.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { equalBytes } from '../protocol/bytes.js';
import { QisError } from '../protocol/errors.js';
import { nodeIdOf } from '../protocol/identity.js';
import { decodeEnrolment, ENROLMENT_FILE, type Enrolment } from '../protocol/enrolment.js';
import { ioError, writeFileDurable } from './durable.js';

/**
 * Checks an enrolment and stores it as `<dataDir>/enrolment.cbor` (mode 0600, atomically). The
 * enrolment must verify and vouch for `nodePublicKey` (the node's key in that dir).
 * @throws QisError ERR_ENROLMENT_INVALID | ERR_NOT_ENROLLED (key-mismatch) | ERR_FILE_IO
 */
export async function installEnrolment(dataDir: string, bytes: Uint8Array, nodePublicKey: Uint8Array): Promise<Enrolment> {
  const e = decodeEnrolment(bytes);
  if (!equalBytes(e.nodePublicKey, nodePublicKey)) {
    throw new QisError('ERR_NOT_ENROLLED', `key-mismatch: the enrolment vouches for node ${e.nodeId}, the key in ${dataDir} is node ${nodeIdOf(nodePublicKey)}`);
  }
  await writeFileDurable(join(dataDir, ENROLMENT_FILE), bytes);
  return e;
}

/** The enrolment stored in a data dir, or undefined when there is none. @throws QisError ERR_FILE_IO | ERR_ENROLMENT_INVALID */
export async function loadEnrolment(dataDir: string): Promise<Enrolment | undefined> {
  const path = join(dataDir, ENROLMENT_FILE);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(path, e);
  }
  return decodeEnrolment(bytes);
}

