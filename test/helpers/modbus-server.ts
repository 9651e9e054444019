// A real Modbus TCP server for the firmware-bridge tests: Debian's python3-pymodbus, started from
// test/fixtures/modbus-server.py (the packaged server command is broken on Debian 12). The test
// changes values through the script's stdin and can kill and restart it on the same port.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { findBinary, waitForPort } from '../../bench/net.js';
import { PYTHON, requirePythonModules } from './python.js';

const SCRIPT = fileURLToPath(new URL('../fixtures/modbus-server.py', import.meta.url));

export interface ModbusServer {
  readonly port: number;
  /** Sets values: table co|di|hr|ir, first address, 16-bit words or 0/1 bits; resolves once applied. */
  set(table: 'co' | 'di' | 'hr' | 'ir', address: number, ...values: number[]): Promise<void>;
  /** Read requests the server has answered so far, refused ones included. */
  requests(): Promise<number>;
  /** SIGKILL, and waits for the process to be gone. */
  kill(): Promise<void>;
}

/**
 * Starts the server on `port`; if it does not listen within 15 s (the port taken for a moment),
 * kills it and tries again, three times in all.
 */
export async function startModbusServer(port: number, initial: string[] = [], framing: 'tcp' | 'rtu' = 'tcp'): Promise<ModbusServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(framing === 'rtu' ? `rtu-tcp:${port}` : String(port), port, initial, 15_000);
    } catch (e) {
      if (attempt >= 3 || /^test peer missing/.test((e as Error).message)) throw e;
    }
  }
}

/**
 * Modbus RTU on a serial line: a pseudo-terminal pair made by socat (Debian `socat`), the pymodbus
 * serial server on one end; the bridge opens `path`, the other end.
 */
export async function startModbusRtuServer(dir: string, initial: string[] = []): Promise<ModbusServer & { readonly path: string }> {
  const socatBin = findBinary('socat');
  const path = join(dir, 'bridge-tty');
  const serverPath = join(dir, 'server-tty');
  const socat = spawn(socatBin, [`pty,raw,echo=0,link=${path}`, `pty,raw,echo=0,link=${serverPath}`], { stdio: 'ignore' });
  const socatExited = new Promise<void>((resolve) => socat.once('exit', () => resolve()));
  const stopSocat = async (): Promise<void> => {
    if (socat.exitCode === null && socat.signalCode === null) socat.kill('SIGTERM');
    await socatExited;
  };
  try {
    const until = Date.now() + 10_000;
    while (!existsSync(path) || !existsSync(serverPath)) {
      if (Date.now() > until || socat.exitCode !== null) throw new Error('socat made no pty pair');
      await new Promise((r) => setTimeout(r, 20));
    }
    const server = await startOnce(`serial:${serverPath}`, 0, initial, 15_000);
    return {
      ...server,
      path,
      async kill() {
        await server.kill();
        await stopSocat();
      },
    };
  } catch (e) {
    await stopSocat();
    throw e;
  }
}

async function startOnce(mode: string, port: number, initial: string[], waitMs: number): Promise<ModbusServer> {
  await requirePythonModules('pymodbus.server', 'pymodbus.datastore');
  const child: ChildProcess = spawn(PYTHON, [SCRIPT, mode, ...initial], { stdio: ['pipe', 'pipe', 'pipe'] });
  let serving: () => void = () => {};
  const served = new Promise<void>((r) => (serving = r));
  let stderr = '';
  let out = '';
  const waiters: { line: string; resolve: () => void }[] = [];
  const counters: ((n: number) => void)[] = [];
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
      if (line === 'serving') serving();
      const n = /^count (\d+)$/.exec(line);
      if (n) counters.shift()?.(Number(n[1]));
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin!.on('error', () => undefined);
  try {
    await Promise.race([
      port === 0 ? served : waitForPort(port, Date.now() + waitMs),
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
    requests() {
      return new Promise((resolve) => {
        counters.push(resolve);
        child.stdin!.write('count\n');
      });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

export interface CountingProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Unit ids seen in requests. */
  readonly units: Set<number>;
  /** The most requests sent and not yet answered at once, over every connection. */
  readonly maxInFlight: number;
  close(): Promise<void>;
}

/**
 * A loopback TCP proxy in front of a Modbus TCP server that counts connections and, from the
 * MBAP headers (7 bytes: transaction, protocol, length, unit), requests in flight and unit ids.
 */
export async function countingProxy(target: number): Promise<CountingProxy> {
  const sockets = new Set<Socket>();
  const state = { connections: 0, units: new Set<number>(), maxInFlight: 0, inFlight: 0 };
  /** Calls `each` with every whole MBAP frame's unit id as bytes arrive. */
  const frames = (each: (unit: number) => void): ((b: Buffer) => void) => {
    let buf = Buffer.alloc(0);
    return (b) => {
      buf = Buffer.concat([buf, b]);
      while (buf.length >= 7 && buf.length >= 6 + buf.readUInt16BE(4)) {
        each(buf.readUInt8(6));
        buf = buf.subarray(6 + buf.readUInt16BE(4));
      }
    };
  };
  const server = createServer((client) => {
    state.connections++;
    const upstream = connect({ host: '127.0.0.1', port: target });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
      s.on('error', () => undefined);
    }
    const up = frames((unit) => {
      state.units.add(unit);
      state.maxInFlight = Math.max(state.maxInFlight, ++state.inFlight);
    });
    const down = frames(() => state.inFlight--);
    client.on('data', (b: Buffer) => {
      up(b);
      upstream.write(b);
    });
    upstream.on('data', (b: Buffer) => {
      down(b);
      client.write(b);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as { port: number }).port,
    get connections() {
      return state.connections;
    },
    units: state.units,
    get maxInFlight() {
      return state.maxInFlight;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
