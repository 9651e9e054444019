/**
 * The bridges at run time: per-machine Modbus poll loops (machines at one endpoint share its
 * connection) and the Sparkplug B subscriber. Publishing is publisher.ts (one node per machine),
 * trigger state on disk trigger-store.ts.
 */
import { join } from 'node:path';
import mqtt from 'mqtt';
import { backoffDelay, backoffOptions, type QisNode, tlsClientOptions } from '../src/index.js';
import type { ModbusBridgeConfig, ModbusMachine, ModbusReading, SparkplugBridgeConfig } from './config.js';
import { codeOf, type BridgeEvent, type BridgeOptions, type DeviceStatus } from './events.js';
import { MachineMapper, type ReadingValue } from './mapping.js';
import { decodeBit, decodeRegisters, decodeString, ModbusException, ModbusTcpClient, planBlocks, type Block, type ModbusTransport } from './modbus.js';
import { BridgeHealth, type ConnectionState } from './health.js';
import { openNodes, type Publisher, startPeriodic } from './publisher.js';
import { ModbusRtuClient } from './serial.js';
import { decodeSparkplugPayload, EdgeNodeState, encodeRebirthRequest, ncmdTopic, parseSparkplugTopic } from './sparkplug.js';
import { STATE_FILE, TriggerStore } from './trigger-store.js';

export type { BridgeEvent, BridgeOptions, DeviceStatus } from './events.js';

export interface Bridge {
  status(): DeviceStatus[];
  /** The machines' nodes, by machine name. */
  readonly nodes: ReadonlyMap<string, QisNode>;
  /** Metrics, /healthz, and the HTTP listener's address when `http` is configured. */
  readonly health: BridgeHealth;
  close(): Promise<void>;
}

/** A reading's value from the bytes (or bits) of the block that holds it. */
function decodeReading(r: ModbusReading, data: Buffer | boolean[], at: number): ReadingValue {
  if (Array.isArray(data)) return data[at]!;
  const bytes = data.subarray(at * 2, (at + r.count) * 2);
  if (r.bit !== undefined) return decodeBit(bytes, r.bit, r.byteOrder);
  if (r.type === 'string') return decodeString(bytes, r.byteOrder);
  return decodeRegisters(bytes, r.type, r.byteOrder, r.scale, r.offset);
}

const plans = new WeakMap<ModbusMachine, Block<string>[]>();
/** A machine's block reads, planned once. */
export function machineBlocks(m: ModbusMachine): Block<string>[] {
  let p = plans.get(m);
  if (!p) {
    p = planBlocks([...m.readings].map(([key, r]) => ({ key, table: r.table, address: r.address, count: r.count })), m.device);
    plans.set(m, p);
  }
  return p;
}

/**
 * Reads every reading of a machine once, neighbouring readings in one block read. A block
 * answered with an exception (a gap over an address the device lacks, say) is read again reading
 * by reading, so the exception is reported for the reading that has it and only that reading is
 * left out.
 */
export async function readMachine(
  client: ModbusTransport,
  m: ModbusMachine,
  onException: (reading: string, e: ModbusException) => void,
): Promise<Map<string, ReadingValue>> {
  const values = new Map<string, ReadingValue>();
  const read = async (b: { table: ModbusReading['table']; address: number; count: number; members: readonly { key: string; address: number }[] }): Promise<void> => {
    try {
      const data = await client.read(m.device.unitId, b.table, b.address, b.count, m.device.timeoutMs);
      for (const s of b.members) values.set(s.key, decodeReading(m.readings.get(s.key)!, data, s.address - b.address));
    } catch (e) {
      if (!(e instanceof ModbusException)) throw e; // the connection is gone or the device is silent
      if (b.members.length === 1) return onException(b.members[0]!.key, e);
      for (const s of b.members) {
        const r = m.readings.get(s.key)!;
        await read({ table: r.table, address: r.address, count: r.count, members: [s] });
      }
    }
  };
  for (const b of machineBlocks(m)) await read(b);
  return values;
}

/** Where a machine's device is reached: `host:port`, `rtu+tcp://host:port` or the serial path. */
export const endpointKey = (m: ModbusMachine): string =>
  m.device.protocol === 'rtu' ? m.device.serial!.path : m.device.protocol === 'rtu-over-tcp' ? `rtu+tcp://${m.device.host}:${m.device.port}` : `${m.device.host}:${m.device.port}`;
const deviceLabel = (m: ModbusMachine): string => `${endpointKey(m)}/${m.device.unitId}`;

/** Opens a machine's transport: the project's Modbus TCP client, or RTU through modbus-serial. */
export function openTransport(m: ModbusMachine, timeoutMs = m.device.timeoutMs, label = endpointKey(m)): Promise<ModbusTransport> {
  const d = m.device;
  if (d.protocol === 'tcp') return ModbusTcpClient.connect(d.host, d.port, timeoutMs, label);
  return ModbusRtuClient.connect(d.protocol === 'rtu' ? { kind: 'rtu', ...d.serial! } : { kind: 'rtu-tcp', host: d.host, port: d.port }, timeoutMs, label);
}

/**
 * One connection per Modbus endpoint (host and port, or serial line), shared by the machines
 * behind it (unit ids of one gateway or bus): many PLCs and gateways accept only one to four
 * connections, and a serial line has one master. The transport sends one request at a time, so
 * the machines' polls are serialised on it. A closed connection is reopened by the next machine
 * that needs it; concurrent needs share one attempt.
 */
class Endpoint {
  private client: ModbusTransport | undefined;
  private opening: Promise<ModbusTransport> | undefined;
  private closed = false;
  /** Connections opened so far. */
  opened = 0;
  constructor(readonly machine: ModbusMachine, readonly timeoutMs: number) {}

  acquire(): Promise<ModbusTransport> {
    if (this.client && !this.client.closed) return Promise.resolve(this.client);
    this.opening ??= openTransport(this.machine, this.timeoutMs)
      .then((c) => {
        this.opened++;
        if (this.closed) c.close();
        this.client = c;
        return c;
      })
      .finally(() => (this.opening = undefined));
    return this.opening;
  }

  close(): void {
    this.closed = true;
    this.client?.close();
  }
}

/**
 * Runs `qis bridge modbus`: one poll loop per machine with its own timeouts and reconnect
 * backoff, so a dead or slow device never stalls another on a different endpoint; machines at one
 * endpoint share its connection.
 */
export async function startModbusBridge(config: ModbusBridgeConfig, o: BridgeOptions = {}): Promise<Bridge> {
  const health = new BridgeHealth();
  const emit = (e: BridgeEvent): void => {
    health.event(e);
    o.onEvent?.(e);
  };
  const pubs = await openNodes(config.machines, config.dataDir, config.broker, o, emit);
  const backoff = backoffOptions(config.reconnect);
  const random = o.random ?? Math.random;
  const now = o.now ?? Date.now;
  const stop = new AbortController();
  const statuses = new Map<string, { -readonly [K in keyof DeviceStatus]: DeviceStatus[K] }>();
  const timers: NodeJS.Timeout[] = [];
  const stores: TriggerStore[] = [];
  const endpoints = new Map<string, Endpoint>();
  for (const m of config.machines) {
    const k = endpointKey(m);
    // The endpoint's connect timeout is the longest of its machines': none is cut short.
    const prev = endpoints.get(k);
    if (!prev || prev.timeoutMs < m.device.timeoutMs) endpoints.set(k, new Endpoint(m, m.device.timeoutMs));
  }
  const wait = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      if (stop.signal.aborted) return resolve();
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        stop.signal.removeEventListener('abort', done);
        resolve();
      }
      stop.signal.addEventListener('abort', done, { once: true });
    });

  const loop = async (m: ModbusMachine): Promise<void> => {
    const pub = pubs.get(m.name)!;
    const mapper = new MachineMapper(m);
    const store = new TriggerStore(join(config.dataDir, m.name, STATE_FILE), mapper, emit);
    stores.push(store);
    await store.load();
    timers.push(...startPeriodic(mapper, pub));
    const device = deviceLabel(m);
    const endpoint = endpoints.get(endpointKey(m))!;
    const st = statuses.get(m.name)!;
    /** Readings answered with an exception, by exception code: reported once per change. */
    const failing = new Map<string, number>();
    let attempt = 0;
    while (!stop.signal.aborted) {
      try {
        if (st.state !== 'up') st.state = 'connecting';
        const client = await endpoint.acquire();
        if (stop.signal.aborted) break;
        while (!stop.signal.aborted) {
          const started = Date.now();
          const refused = new Set<string>();
          const values = await readMachine(client, m, (reading, e) => {
            st.exceptions++;
            refused.add(reading);
            if (failing.get(reading) !== e.exception) emit({ type: 'modbus-exception', machine: m.name, device, reading, exception: e.exception, message: `${device} ${reading}: ${e.message}` });
            failing.set(reading, e.exception);
          });
          for (const reading of failing.keys()) {
            if (refused.has(reading)) continue;
            failing.delete(reading);
            emit({ type: 'reading-recovered', machine: m.name, device, reading });
          }
          if (st.state !== 'up') {
            st.state = 'up';
            emit({ type: 'device-up', machine: m.name, device });
          }
          attempt = 0; // a full poll: the device is back
          st.polls++;
          st.lastPollAt = Date.now();
          pub.send(mapper.update(values, now()));
          mapper.markBad(refused);
          store.save();
          st.published = pub.published;
          await wait(Math.max(0, m.device.pollMs - (Date.now() - started)));
        }
      } catch (e) {
        if (stop.signal.aborted) break;
        const code = codeOf(e);
        const delay = backoffDelay(attempt++, backoff, random);
        st.state = 'down';
        st.failures++;
        mapper.markStale(); // periodic rules publish nothing until the device is read again
        st.lastError = { code, message: (e as Error).message, at: Date.now() };
        emit({ type: 'device-down', machine: m.name, device, code, message: (e as Error).message, retryInMs: delay });
        // Even an unexpected failure (a bug) is reported and retried with backoff: one machine's
        // poll loop never stops for good while the bridge runs.
        await wait(delay);
      }
    }
  };

  for (const m of config.machines) statuses.set(m.name, { machine: m.name, device: deviceLabel(m), state: 'connecting', polls: 0, exceptions: 0, failures: 0, published: 0, acknowledged: 0 });
  const loops = config.machines.map((m) =>
    loop(m).catch((e: unknown) => {
      emit({ type: 'device-down', machine: m.name, device: deviceLabel(m), code: codeOf(e), message: `poll loop stopped: ${(e as Error).message}`, retryInMs: -1 });
    }),
  );
  const status = (): DeviceStatus[] => [...statuses.values()].map((s) => ({ ...s, published: pubs.get(s.machine)!.published, acknowledged: pubs.get(s.machine)!.acknowledged }));
  let closing: Promise<void> | undefined;
  const bridge: Bridge = {
    nodes: new Map([...pubs].map(([k, p]) => [k, p.node])),
    health,
    status,
    close() {
      closing ??= (async () => {
        await health.close();
        stop.abort();
        for (const t of timers) clearInterval(t);
        for (const e of endpoints.values()) e.close();
        await Promise.all(loops);
        await Promise.all(stores.map((x) => x.idle()));
        await Promise.all([...pubs.values()].map((p) => p.idle()));
        await Promise.all([...pubs.values()].map((p) => p.node.close()));
      })();
      return closing;
    },
  };
  await startHealth(bridge, health, pubs, config.http, () => []);
  return bridge;
}

/** Serves the bridge's health (when `http` is configured); a listener that cannot start closes the bridge. */
async function startHealth(bridge: Bridge, health: BridgeHealth, pubs: ReadonlyMap<string, Publisher>, http: ModbusBridgeConfig['http'], more: () => ConnectionState[]): Promise<void> {
  const connections = (): ConnectionState[] => [...[...pubs].map(([machine, p]) => ({ connection: 'qis' as const, machine, up: p.node.connected })), ...more()];
  try {
    await health.start({ status: () => bridge.status(), connections }, http);
  } catch (e) {
    await bridge.close();
    throw e;
  }
}

/**
 * Runs `qis bridge sparkplug`: subscribes to `spBv1.0/<group>/#` on the factory broker, keeps
 * each edge node's birth tables and seq, asks for a rebirth (NCMD `Node Control/Rebirth`) on a
 * gap or an unknown alias instead of guessing, and maps live metrics to outcomes.
 */
export async function startSparkplugBridge(config: SparkplugBridgeConfig, o: BridgeOptions = {}): Promise<Bridge & { readonly connected: Promise<void> }> {
  const health = new BridgeHealth();
  const emit = (e: BridgeEvent): void => {
    health.event(e);
    o.onEvent?.(e);
  };
  const pubs = await openNodes(config.machines, config.dataDir, config.broker, o, emit);
  const sp = config.sparkplug;
  const filter = `spBv1.0/${sp.group}/#`;
  const states = new Map<string, EdgeNodeState>();
  const lastRebirth = new Map<string, number>();
  const now = o.now ?? Date.now;
  const mappers = config.machines.map((m) => {
    const mapper = new MachineMapper(m);
    return { m, mapper, pub: pubs.get(m.name)!, store: new TriggerStore(join(config.dataDir, m.name, STATE_FILE), mapper, emit) };
  });
  for (const { store } of mappers) await store.load();
  const timers = mappers.flatMap(({ mapper, pub }) => startPeriodic(mapper, pub));
  const statuses = new Map(config.machines.map((m) => [m.name, { polls: 0, lastPollAt: undefined as number | undefined }]));
  let up = false;

  // Sparkplug 3.0 primary host: STATE retained, online at each connect, offline as the will (the
  // same timestamp in both, as §7.5.3 asks) and on a clean close. Edge nodes configured to wait
  // for a primary host send nothing until it is online.
  const stateTopic = sp.hostId === undefined ? undefined : `spBv1.0/STATE/${sp.hostId}`;
  const stateTs = now();
  const statePayload = (online: boolean): Buffer => Buffer.from(JSON.stringify({ online, timestamp: stateTs }));
  const client = mqtt.connect(sp.url, {
    ...(stateTopic === undefined ? {} : { will: { topic: stateTopic, payload: statePayload(false), qos: 1, retain: true } }),
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    ...(sp.clientId === undefined ? {} : { clientId: sp.clientId }),
    ...(sp.username === undefined ? {} : { username: sp.username }),
    ...(sp.password === undefined ? {} : { password: sp.password }),
    ...tlsClientOptions(sp.tls),
  });
  let resolveConnected: () => void = () => {};
  const connected = new Promise<void>((r) => (resolveConnected = r));

  client.on('connect', () => {
    // A new session: whatever happened meanwhile is unknown, so every edge node starts unborn.
    for (const s of states.values()) s.reset();
    client.subscribe(filter, { qos: 0 }, (err, granted) => {
      if (err || granted?.some((g) => g.qos === 128)) {
        emit({ type: 'sparkplug-disconnected', reason: `subscription to ${filter} refused` });
        return;
      }
      up = true;
      emit({ type: 'sparkplug-connected', url: sp.url, filter });
      if (stateTopic !== undefined) client.publish(stateTopic, statePayload(true), { qos: 1, retain: true }, () => resolveConnected());
      else resolveConnected();
    });
  });
  client.on('close', () => {
    if (up) emit({ type: 'sparkplug-disconnected', reason: 'connection closed' });
    up = false;
  });
  client.on('error', () => undefined); // reported through close; mqtt.js reconnects

  /** Machine and reading pairs already reported as fed by a metric that cannot drive a rule. */
  const unusableSaid = new Set<string>();
  const reportUnusable = (machine: string, reading: string, metric: string, unusable: ReadonlyMap<string, string>): void => {
    // The metric itself, or the Template or DataSet it would be spread from (`Recipe` for `Recipe/0/Temp`).
    const at = [...unusable.keys()].find((k) => metric === k || metric.startsWith(`${k}/`));
    const key = JSON.stringify([machine, reading]);
    if (at === undefined || unusableSaid.has(key)) return;
    unusableSaid.add(key);
    emit({ type: 'metric-unusable', machine, reading, metric, reason: `${at}: ${unusable.get(at)!}` });
  };

  const rebirth = (edgeNode: string, reason: string): void => {
    const now = Date.now();
    const last = lastRebirth.get(edgeNode);
    if (last !== undefined && now - last < sp.rebirthIntervalMs) return;
    lastRebirth.set(edgeNode, now);
    const topic = ncmdTopic(sp.group, edgeNode);
    client.publish(topic, Buffer.from(encodeRebirthRequest(now)), { qos: 0 });
    emit({ type: 'rebirth-requested', edgeNode, reason, topic });
  };

  client.on('message', (topic, payload) => {
    let t;
    let p;
    try {
      t = parseSparkplugTopic(topic);
      if (t.type === 'STATE' || t.type === 'NCMD' || t.type === 'DCMD') return;
      p = decodeSparkplugPayload(payload);
    } catch (e) {
      emit({ type: 'sparkplug-dropped', topic, code: codeOf(e), message: (e as Error).message });
      return;
    }
    let state = states.get(t.edgeNode);
    if (!state) states.set(t.edgeNode, (state = new EdgeNodeState()));
    const r = state.handle(t.type, t.device, p);
    if (r.kind === 'rebirth') return rebirth(t.edgeNode, r.reason);
    if (r.kind === 'ignored') return;
    for (const { m, mapper, pub, store } of mappers) {
      if (m.edgeNode !== t.edgeNode) continue;
      if (r.kind === 'death') {
        // NDEATH covers the node and its devices; DDEATH one device.
        if (r.device === undefined || r.device === m.device) mapper.forget(m.readings.keys());
        continue;
      }
      if (r.device !== m.device) continue;
      if (r.historical > 0) emit({ type: 'historical', edgeNode: t.edgeNode, ...(r.device === undefined ? {} : { device: r.device }), count: r.historical });
      const values = new Map<string, ReadingValue>();
      for (const [name, reading] of m.readings) {
        const v = r.values.get(reading.metric);
        if (v === undefined) {
          if (r.unusable.size > 0) reportUnusable(m.name, name, reading.metric, r.unusable);
          continue;
        }
        values.set(name, typeof v === 'number' ? v * reading.scale + reading.offset : v);
      }
      const st = statuses.get(m.name)!;
      st.polls++;
      st.lastPollAt = Date.now();
      if (values.size > 0) {
        pub.send(mapper.update(values, now()));
        store.save();
      }
    }
  });

  let closing: Promise<void> | undefined;
  const bridge = {
    connected,
    health,
    nodes: new Map([...pubs].map(([k, p]) => [k, p.node])),
    status: () =>
      config.machines.map((m) => {
        const st = statuses.get(m.name)!;
        return {
          machine: m.name,
          device: `${sp.group}/${m.edgeNode}${m.device === undefined ? '' : `/${m.device}`}`,
          state: up && states.get(m.edgeNode)?.born ? 'up' : up ? 'connecting' : 'down',
          ...(st.lastPollAt === undefined ? {} : { lastPollAt: st.lastPollAt }),
          polls: st.polls,
          exceptions: 0,
          failures: 0,
          published: pubs.get(m.name)!.published,
          acknowledged: pubs.get(m.name)!.acknowledged,
        } satisfies DeviceStatus;
      }),
    close() {
      closing ??= (async () => {
        await health.close();
        for (const t of timers) clearInterval(t);
        if (stateTopic !== undefined && client.connected) {
          await new Promise<void>((r) => client.publish(stateTopic, statePayload(false), { qos: 1, retain: true }, () => r()));
        }
        await new Promise<void>((r) => client.end(true, {}, () => r()));
        await Promise.all(mappers.map((x) => x.store.idle()));
        await Promise.all([...pubs.values()].map((p) => p.idle()));
        await Promise.all([...pubs.values()].map((p) => p.node.close()));
      })();
      return closing;
    },
  };
  await startHealth(bridge, health, pubs, config.http, () => [{ connection: 'sparkplug', machine: '', up }]);
  return bridge;
}
