/**
 * The bridge's health: Prometheus metrics (prom-client, on a registry of its own, as the
 * broker's) and, when `http: { host, port }` is configured, a listener serving `/healthz` and
 * `/metrics`. Counts come from the bridge's events (rule fires, refusals) and from its status
 * (reads, errors, acknowledgements), read at scrape time so the poll loops do no extra work.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { QisError } from '../src/index.js';
import type { BridgeEvent, DeviceStatus } from './events.js';
import type { HttpListen } from './config.js';

/** A connection of the bridge to a broker: `qis` (one per machine) or `sparkplug` (the factory broker). */
export interface ConnectionState {
  readonly connection: 'qis' | 'sparkplug';
  readonly machine: string;
  readonly up: boolean;
}

export interface HealthSources {
  status(): DeviceStatus[];
  connections(): ConnectionState[];
}

/** Sets a counter to a running total kept elsewhere (monotonic, so a valid counter). */
function total(c: Counter<'machine'>, rows: readonly DeviceStatus[], pick: (s: DeviceStatus) => number): void {
  c.reset();
  for (const s of rows) c.inc({ machine: s.machine }, pick(s));
}

export class BridgeHealth {
  readonly registry = new Registry();
  private readonly fires: Counter<'machine' | 'rule' | 'result'>;
  private readonly events: Counter<'type'>;
  private sources: HealthSources | undefined;
  private server: Server | undefined;

  constructor() {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'qis_bridge_process_' });
    const rows = (): DeviceStatus[] => this.sources?.status() ?? [];
    this.fires = new Counter({ name: 'qis_bridge_rule_fires_total', help: 'outcome rules fired, by machine, rule and result (published: queued in the outbox; failed: not built or not queued; skipped: stale or bad readings)', labelNames: ['machine', 'rule', 'result'] as const, registers: [r] });
    this.events = new Counter({ name: 'qis_bridge_events_total', help: 'bridge events by type (device-down, modbus-exception, node-refused, rebirth-requested, sparkplug-dropped, …)', labelNames: ['type'] as const, registers: [r] });
    new Gauge({
      name: 'qis_bridge_device_up',
      help: '1 while the machine\'s device (Modbus) or edge node (Sparkplug) is up, else 0',
      labelNames: ['machine', 'device'] as const,
      registers: [r],
      collect() {
        this.reset();
        for (const s of rows()) this.set({ machine: s.machine, device: s.device }, s.state === 'up' ? 1 : 0);
      },
    });
    const counter = (name: string, help: string, pick: (s: DeviceStatus) => number): void => {
      new Counter({
        name,
        help,
        labelNames: ['machine'] as const,
        registers: [r],
        collect() {
          total(this, rows(), pick);
        },
      });
    };
    counter('qis_bridge_reads_total', 'complete reads of a machine (Modbus polls; Sparkplug data messages for it)', (s) => s.polls);
    counter('qis_bridge_read_errors_total', 'failed reads of a machine: Modbus exceptions plus failed polls (connection lost, timeout)', (s) => s.exceptions + s.failures);
    counter('qis_bridge_packets_queued_total', 'packets queued in the machine\'s outbox for the qis broker', (s) => s.published);
    counter('qis_bridge_packets_acknowledged_total', 'packets the qis broker acknowledged (PUBACK), or superseded by a newer acknowledged one', (s) => s.acknowledged);
    const conns = (): ConnectionState[] => this.sources?.connections() ?? [];
    new Gauge({
      name: 'qis_bridge_connection_up',
      help: '1 while the connection to a broker is up (connection qis: the machine\'s node; sparkplug: the factory broker), else 0',
      labelNames: ['connection', 'machine'] as const,
      registers: [r],
      collect() {
        this.reset();
        for (const c of conns()) this.set({ connection: c.connection, machine: c.machine }, c.up ? 1 : 0);
      },
    });
  }

  /** Counts one bridge event. */
  event(e: BridgeEvent): void {
    this.events.inc({ type: e.type });
    if (e.type === 'published') this.fires.inc({ machine: e.machine, rule: e.rule, result: 'published' });
    else if (e.type === 'publish-failed') this.fires.inc({ machine: e.machine, rule: e.rule, result: 'failed' });
    else if (e.type === 'skipped') this.fires.inc({ machine: e.machine, rule: e.rule, result: 'skipped' });
  }

  /** 200 while every connection to a broker is up, else 503; devices are listed either way (a device down is the PLC's fault, not the bridge's). */
  health(): { ok: boolean; connections: ConnectionState[]; devices: DeviceStatus[] } {
    const connections = this.sources?.connections() ?? [];
    return { ok: this.sources !== undefined && connections.every((c) => c.up), connections, devices: this.sources?.status() ?? [] };
  }

  /**
   * Reads status from `sources` and, with `at`, serves `/healthz` and `/metrics` there.
   * @throws QisError ERR_FILE_IO when the address cannot be bound
   */
  async start(sources: HealthSources, at: HttpListen | undefined): Promise<void> {
    this.sources = sources;
    if (at === undefined) return;
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?', 1)[0];
      if (path === '/healthz') {
        const h = this.health();
        res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify(h));
      } else if (path === '/metrics') {
        this.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': this.registry.contentType });
            res.end(text);
          },
          (e: unknown) => {
            res.writeHead(500);
            res.end(String(e));
          },
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('try /healthz or /metrics\n');
      }
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(at.port, at.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      server.close();
      throw new QisError('ERR_FILE_IO', `cannot listen for HTTP on ${at.host}:${at.port}: ${(e as Error).message}`, { cause: e });
    }
    this.server = server;
  }

  /** The HTTP listener's address (its port when configured as 0), if it listens. */
  address(): { host: string; port: number } | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    const closed = new Promise<void>((r) => s.close(() => r()));
    s.closeAllConnections(); // keep-alive scrapers would hold close() open
    await closed;
  }
}
