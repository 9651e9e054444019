// A real Modbus TCP server for the firmware-bridge tests: Debian's python3-pymodbus, started from
// test/fixtures/modbus-server.py (the packaged server command is broken on Debian 12). The test
// changes values through the script's stdin and can kill and restart it on the same port.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { waitForPort } from '../../bench/net.js';
import { PYTHON, requirePythonModules } from './python.js';

const SCRIPT = fileURLToPath(new URL('../fixtures/modbus-server.py', import.meta.url));

export interface ModbusServer {
  readonly port: number;
  /** Sets values: table co|di|hr|ir, first address, 16-bit words or 0/1 bits; resolves once applied. */
  set(table: 'co' | 'di' | 'hr' | 'ir', address: number, ...values: number[]): Promise<void>;
  /** SIGKILL, and waits for the process to be gone. */
  kill(): Promise<void>;
}

/**
 * Starts the server on `port`; if it does not listen within 15 s (the port taken for a moment),
 * kills it and tries again, three times in all.
 */
export async function startModbusServer(port: number, initial: string[] = []): Promise<ModbusServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(port, initial, 15_000);
    } catch (e) {
      if (attempt >= 3 || /^test peer missing/.test((e as Error).message)) throw e;
    }
  }
}

async function startOnce(port: number, initial: string[], waitMs: number): Promise<ModbusServer> {
  await requirePythonModules('pymodbus.server', 'pymodbus.datastore');
  const child: ChildProcess = spawn(PYTHON, [SCRIPT, String(port), ...initial], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let out = '';
  const waiters: { line: string; resolve: () => void }[] = [];
  child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString();
    for (;;) {
      const i = out.indexOf('\n');
      if (i < 0) break;
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      const w = waiters.findIndex((x) => `ok ${x.line}` === line);
      if (w >= 0) waiters.splice(w, 1)[0]!.resolve();
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin!.on('error', () => undefined);
  try {
    await Promise.race([
      waitForPort(port, Date.now() + waitMs),
      exited.then(() => {
        throw new Error(`modbus server exited: ${stderr}`);
      }),
    ]);
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    throw e;
  }
  return {
    port,
    set(table, address, ...values) {
      const line = `${table} ${address} ${values.join(' ')}`;
      return new Promise((resolve) => {
        waiters.push({ line, resolve });
        child.stdin!.write(line + '\n');
      });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
