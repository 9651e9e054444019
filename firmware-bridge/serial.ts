/**
 * Modbus RTU over a serial line (RS-485 adapters) and RTU over TCP (serial gateways), through
 * `modbus-serial` on `serialport`: the field's maintained library for these transports (RTU
 * framing, CRC16, inter-frame timing, port settings), so the bridge does not grow its own serial
 * stack. serialport's native binding ships prebuilt for Linux, macOS and Windows and loads
 * without an install script. Plain Modbus TCP keeps the project's own client (modbus.ts).
 *
 * Presents the same `read` as ModbusTcpClient: one request at a time (a serial bus carries one
 * transaction at a time), exceptions as ModbusException, silence as ERR_TIMEOUT.
 */
import { createRequire } from 'node:module';
import type { ModbusRTU as ModbusRTUType } from 'modbus-serial/ModbusRTU.js';
import { QisError } from '../src/index.js';
import { ModbusException, READ_FUNCTION, type ModbusTransport, type Table } from './modbus.js';

// modbus-serial is CommonJS (module.exports = the class); its typings describe an ES default.
const ModbusRTU = createRequire(import.meta.url)('modbus-serial') as typeof ModbusRTUType;

export type Parity = 'none' | 'even' | 'odd';

export type RtuTarget =
  | { readonly kind: 'rtu'; readonly path: string; readonly baudRate: number; readonly parity: Parity; readonly dataBits: 7 | 8; readonly stopBits: 1 | 2 }
  | { readonly kind: 'rtu-tcp'; readonly host: string; readonly port: number };

export class ModbusRtuClient implements ModbusTransport {
  private readonly client = new ModbusRTU();
  private queue: Promise<unknown> = Promise.resolve();
  private closedError: Error | undefined;
  requests = 0;
  answers = 0;

  private constructor(readonly label: string) {}

  /** Opens the serial port or the gateway connection, or rejects with ERR_DEVICE_UNREACHABLE. */
  static async connect(target: RtuTarget, timeoutMs: number, label: string): Promise<ModbusRtuClient> {
    const c = new ModbusRtuClient(label);
    const open =
      target.kind === 'rtu'
        ? c.client.connectRTUBuffered(target.path, { baudRate: target.baudRate, parity: target.parity, dataBits: target.dataBits, stopBits: target.stopBits })
        : // RTU frames as they are on the wire (unit, PDU, CRC16) over TCP: modbus-serial's
          // "Telnet" port. Not connectTcpRTUBuffered: despite its name that one wraps each
          // request in a Modbus TCP (MBAP) header and strips the CRC, so an RTU gateway (and
          // pymodbus's RTU-framed TCP server) never sees a valid frame.
          c.client.connectTelnet(target.host, { port: target.port });
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([open, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`not open within ${timeoutMs} ms`)), timeoutMs)))]);
    } catch (e) {
      c.client.close(() => undefined);
      throw new QisError('ERR_DEVICE_UNREACHABLE', `${label}: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  get closed(): boolean {
    return this.closedError !== undefined || !this.client.isOpen;
  }

  read(unitId: number, table: Table, address: number, count: number, timeoutMs: number): Promise<Buffer | boolean[]> {
    const fn = READ_FUNCTION[table];
    const run = async (): Promise<Buffer | boolean[]> => {
      if (this.closed) throw this.closedError ?? new QisError('ERR_DEVICE_UNREACHABLE', `${this.label}: port closed`);
      this.client.setID(unitId);
      this.client.setTimeout(timeoutMs);
      this.requests++;
      try {
        let r: Buffer | boolean[];
        if (table === 'coil' || table === 'discrete') {
          const res = table === 'coil' ? await this.client.readCoils(address, count) : await this.client.readDiscreteInputs(address, count);
          r = res.data.slice(0, count);
        } else {
          const res = table === 'holding' ? await this.client.readHoldingRegisters(address, count) : await this.client.readInputRegisters(address, count);
          r = Buffer.from(res.buffer);
          if (r.length !== count * 2) throw new QisError('ERR_DEVICE_UNREACHABLE', `${this.label}: ${r.length} bytes for ${count} registers`);
        }
        this.answers++;
        return r;
      } catch (e) {
        if (e instanceof QisError) throw e;
        const err = e as { modbusCode?: number; errno?: string; message?: string };
        if (typeof err.modbusCode === 'number') {
          this.answers++;
          throw new ModbusException(fn, err.modbusCode);
        }
        if (err.errno === 'ETIMEDOUT') throw new QisError('ERR_TIMEOUT', `${this.label}: no answer from unit ${unitId} to function ${fn} at ${address} within ${timeoutMs} ms`);
        this.close();
        throw new QisError('ERR_DEVICE_UNREACHABLE', `${this.label}: ${err.message ?? String(e)}`);
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  close(): void {
    this.closedError ??= new QisError('ERR_CLOSED', `${this.label}: closed`);
    if (this.client.isOpen) this.client.close(() => undefined);
  }
}
