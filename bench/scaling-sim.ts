/**
 * Federation scaling simulation (issue 5 §2): for R regions and N nodes, what each way of sharing
 * packets between regions costs: inter-region messages per update, packets and bytes stored per
 * region (and the max/mean imbalance), query cost, and what a region failure makes unavailable.
 *
 *   npm run build && node dist/bench/scaling-sim.js        (tables; a few seconds)
 *   node dist/bench/scaling-sim.js --json                  (one JSON object)
 *   node dist/bench/scaling-sim.js --seed=7 --locality=0.5 --zipf=0.8 --cohort=50 --queries=0.1
 *
 * Modes (docs/scaling.md):
 *  - full replication (what the federation config offers today): every region stores every
 *    packet; an update is flooded over the links: a region that receives a packet newer than the
 *    one it holds forwards it to every other peer, an older or equal one dies (PROTOCOL §8).
 *    Simulated on a full mesh and on a ring, message by message (`flood`).
 *  - home-region routing: a bucket's homes are the k regions with the highest rendezvous
 *    (highest-random-weight) score SHA-256(bucket ‖ region); the publisher's region stores its own
 *    clients' packets (admission keeps them, as today) and forwards each update to the homes;
 *    a query from any other region is one inter-region round trip to a home. k = 1 and k = 2.
 *  - interest-based pull: a region holds exactly the buckets its local nodes subscribe to; an
 *    update goes straight to every other region holding its bucket (an interest directory, i.e.
 *    subscriptions propagated between regions, tells which); warm queries are local.
 *
 * The world: N nodes in B = N / cohort buckets (exact cohorts). Each node publishes in, and
 * queries, its own bucket (QIS: the cohort is the set of nodes with the same situation), so a
 * bucket's size is also its interest. Bucket sizes follow Zipf(s) over the buckets
 * (`--zipf`, default 1: a few very popular situations, a long tail). Each bucket has an origin
 * region (uniform); a node of the bucket lives there with probability `--locality` λ (default
 * 0.8) and otherwise in one of the other regions, uniformly (λ = 1/R is no locality at all).
 * Every node is placed one by one (N = 10^6 included: a million PRNG draws), and every bucket is
 * hashed over every region (B × R SHA-256), so loads and imbalances come from actual placement.
 * All counts per mode are then exact sums over the bucket × region matrix of node counts.
 *
 * Units: one update = one node publishing a new packet; "messages" are packet transfers over
 * inter-region links (each is verified again at the receiving broker, PROTOCOL §8), not counting
 * the client's own publish to its broker. A query is one node asking for its own bucket. Bytes are
 * packets × 320 B (what the broker's store uses per packet, bench/store.ts: 318–335 B).
 * Ratios are against full replication on a ring, computed in the same run (the cheapest flooding
 * topology in messages; its storage is N packets in every region, like any full replication).
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { JSON_OUT, optNum } from './args.js';
import { prng } from '../src/index.js';

/** Bytes per stored packet (bench/store.ts measures 318–335 B on disk). */
export const PACKET_BYTES = 320;

// ------------------------------------------------------------------------------ rendezvous hash

/** Highest-random-weight score of `region` for `bucket`: the first 48 bits of SHA-256(bucket NUL region). */
export function hrwScore(bucket: string, region: string): number {
  return createHash('sha256').update(`${bucket}\0${region}`).digest().readUIntBE(0, 6);
}

/**
 * The k home regions of `bucket` (indices into `regions`), best first: the regions with the
 * highest `hrwScore` (ties, 1 in 2^48, by name). Depends only on the set of regions, not on
 * their order; adding a region moves a bucket only to the new region.
 */
export function rendezvousHomes(bucket: string, regions: readonly string[], k = 1): number[] {
  const scored = regions.map((name, i) => ({ i, name, s: hrwScore(bucket, name) }));
  scored.sort((a, b) => b.s - a.s || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return scored.slice(0, Math.min(k, regions.length)).map((x) => x.i);
}

// ------------------------------------------------------------------------------ topologies

/** Peers of each region in a full mesh. */
export function meshLinks(r: number): number[][] {
  return Array.from({ length: r }, (_, i) => Array.from({ length: r }, (_, j) => j).filter((j) => j !== i));
}

/** Peers of each region in a ring (i ↔ i ± 1). */
export function ringLinks(r: number): number[][] {
  if (r === 1) return [[]];
  if (r === 2) return [[1], [0]];
  return Array.from({ length: r }, (_, i) => [(i + r - 1) % r, (i + 1) % r]);
}

/**
 * Floods one update from `origin`, message by message in FIFO order (equal link delays): a
 * region receiving the packet for the first time stores it and forwards it to all its peers but
 * the sender; a region that already holds it drops it (not newer: PROTOCOL §8).
 * Returns messages sent, the hop count of the farthest region, and how many regions got it.
 */
export function flood(links: readonly (readonly number[])[], origin: number): { messages: number; hops: number; reached: number } {
  const hop = new Int32Array(links.length).fill(-1);
  hop[origin] = 0;
  const queue: Array<[number, number]> = (links[origin] ?? []).map((p) => [origin, p]);
  let messages = 0;
  let maxHop = 0;
  let reached = 1;
  for (let q = 0; q < queue.length; q++) {
    const [from, to] = queue[q] as [number, number];
    messages++;
    if ((hop[to] as number) >= 0) continue; // stale: dropped, not forwarded
    hop[to] = (hop[from] as number) + 1;
    maxHop = Math.max(maxHop, hop[to] as number);
    reached++;
    for (const p of links[to] ?? []) if (p !== from) queue.push([to, p]);
  }
  return { messages, hops: maxHop, reached };
}

// ------------------------------------------------------------------------------ the world

/** Nodes per (bucket, region): `counts[b * regions + r]`. */
export interface World {
  readonly regions: number;
  readonly buckets: number;
  readonly counts: Int32Array;
}

export interface WorldOptions {
  readonly regions: number;
  readonly nodes: number;
  /** Mean nodes per bucket: B = round(nodes / cohort). */
  readonly cohort: number;
  /** Zipf exponent of bucket popularity (0: uniform). */
  readonly zipf: number;
  /** Fraction of a bucket's nodes in its origin region (1/R: none). */
  readonly locality: number;
  readonly seed: number;
}


/** Places every node: a bucket drawn from Zipf(s), then its region (origin with probability λ). */
export function makeWorld(o: WorldOptions): World {
  const R = o.regions;
  const B = Math.max(1, Math.round(o.nodes / o.cohort));
  const rand = prng(o.seed);
  const cdf = new Float64Array(B);
  let acc = 0;
  for (let b = 0; b < B; b++) cdf[b] = acc += 1 / Math.pow(b + 1, o.zipf);
  for (let b = 0; b < B; b++) cdf[b] = (cdf[b] as number) / acc;
  const origin = new Int32Array(B);
  for (let b = 0; b < B; b++) origin[b] = Math.floor(rand() * R);
  const counts = new Int32Array(B * R);
  for (let n = 0; n < o.nodes; n++) {
    const u = rand();
    let lo = 0;
    let hi = B - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cdf[mid] as number) < u) lo = mid + 1;
      else hi = mid;
    }
    const home = origin[lo] as number;
    let r = home;
    if (R > 1 && rand() >= o.locality) {
      r = Math.floor(rand() * (R - 1));
      if (r >= home) r++;
    }
    counts[lo * R + r] = (counts[lo * R + r] as number) + 1;
  }
  return { regions: R, buckets: B, counts };
}

export const regionNames = (r: number): string[] => Array.from({ length: r }, (_, i) => `region-${i}`);
/** A bucket is an exact cohort: the topic prefix qis/1/o/<tplId>/<L1>/…/<Lk> (synthetic here). */
export const bucketName = (b: number): string => `qis/1/o/sim/${b}`;

/** The top-k homes of every bucket of `world`, `homes[b * k + j]`. */
export function placeHomes(world: World, k: number): Int32Array {
  const names = regionNames(world.regions);
  const homes = new Int32Array(world.buckets * k);
  for (let b = 0; b < world.buckets; b++) {
    const h = rendezvousHomes(bucketName(b), names, k);
    for (let j = 0; j < k; j++) homes[b * k + j] = h[j] as number;
  }
  return homes;
}

// ------------------------------------------------------------------------------ the modes

export interface ModeResult {
  readonly mode: string;
  /** Inter-region links each region keeps (max). */
  readonly links: number;
  /** Mean inter-region packet transfers per update. */
  readonly msgsPerUpdate: number;
  /** Most link hops from a publisher's region to a region that stores the packet. */
  readonly hops: number;
  /** Packets stored per region: mean and max over regions. */
  readonly storeMean: number;
  readonly storeMax: number;
  /** Buckets whose home a region is, max/mean (home-region modes: the hash's own balance). */
  readonly homeBucketImbalance?: number;
  /** Fraction of queries that need an inter-region round trip. */
  readonly queryRemote: number;
  /** Mean packets crossing a link per query. */
  readonly queryPackets: number;
  /** One region down: fraction of the surviving regions' queries with no reachable answer (mean and worst over which region). */
  readonly down1Mean: number;
  readonly down1Worst: number;
  /** Two regions down (worst pair), where computed. */
  readonly down2Worst?: number;
}

function totals(world: World): { size: Int32Array; inRegion: Float64Array; nodes: number } {
  const { regions: R, buckets: B, counts } = world;
  const size = new Int32Array(B);
  const inRegion = new Float64Array(R);
  let nodes = 0;
  for (let b = 0; b < B; b++) {
    for (let r = 0; r < R; r++) {
      const c = counts[b * R + r] as number;
      size[b] = (size[b] as number) + c;
      inRegion[r] = (inRegion[r] as number) + c;
      nodes += c;
    }
  }
  return { size, inRegion, nodes };
}

const meanMax = (xs: ArrayLike<number>): { mean: number; max: number } => {
  let s = 0;
  let m = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    s += xs[i] as number;
    m = Math.max(m, xs[i] as number);
  }
  return { mean: s / xs.length, max: m };
};

/** Full replication flooded over `topology`: every region stores every packet. */
export function fullReplication(world: World, topology: 'mesh' | 'ring'): ModeResult {
  const R = world.regions;
  const links = topology === 'mesh' ? meshLinks(R) : ringLinks(R);
  const { inRegion, nodes } = totals(world);
  let msgs = 0;
  let hops = 0;
  for (let r = 0; r < R; r++) {
    if ((inRegion[r] as number) === 0) continue;
    const f = flood(links, r);
    if (f.reached !== R) throw new Error(`flood from ${r} reached ${f.reached} of ${R} regions`);
    msgs += f.messages * (inRegion[r] as number);
    hops = Math.max(hops, f.hops);
  }
  // Every querier's own region holds every bucket: no query is remote and no failure of another
  // region hides anything (a ring with one region down is still a chain).
  return {
    mode: `full, ${topology}`,
    links: Math.max(...links.map((l) => l.length)),
    msgsPerUpdate: msgs / nodes,
    hops,
    storeMean: nodes,
    storeMax: nodes,
    queryRemote: 0,
    queryPackets: 0,
    down1Mean: 0,
    down1Worst: 0,
    down2Worst: 0,
  };
}

/**
 * Home-region routing with `k` homes per bucket (`homes[b * k + j]`). The publisher's region keeps
 * its own clients' packets and forwards each update to every home but itself; a query from a
 * region that is not a home is one round trip to a home, which returns the whole bucket.
 */
export function homeRegion(world: World, homes: Int32Array, k: number): ModeResult {
  const { regions: R, buckets: B, counts } = world;
  const { size, inRegion, nodes } = totals(world);
  const store = new Float64Array(R);
  const homed = new Float64Array(R);
  let msgs = 0;
  let remote = 0;
  let crossing = 0;
  const down1 = new Float64Array(R);
  const pair = new Map<number, number>();
  for (let b = 0; b < B; b++) {
    const n = size[b] as number;
    const hs = Array.from(homes.subarray(b * k, b * k + k));
    for (const h of hs) {
      store[h] = (store[h] as number) + n;
      homed[h] = (homed[h] as number) + 1;
    }
    for (let r = 0; r < R; r++) {
      const c = counts[b * R + r] as number;
      if (c === 0) continue;
      const isHome = hs.includes(r);
      if (!isHome) {
        store[r] = (store[r] as number) + c; // the local broker keeps its own clients' packets
        remote += c;
        crossing += c * n;
      }
      msgs += c * (isHome ? k - 1 : k);
    }
    // Unavailable when every home is down: the queriers outside the failed regions lose it.
    if (k === 1) {
      const h = hs[0] as number;
      down1[h] = (down1[h] as number) + n - (counts[b * R + h] as number);
    } else if (k === 2) {
      const [h1, h2] = hs as [number, number];
      const key = Math.min(h1, h2) * R + Math.max(h1, h2);
      pair.set(key, (pair.get(key) ?? 0) + n - (counts[b * R + h1] as number) - (counts[b * R + h2] as number));
    }
  }
  const d1 = Array.from(down1, (u, f) => (nodes - (inRegion[f] as number) > 0 ? u / (nodes - (inRegion[f] as number)) : 0));
  let d2 = 0;
  for (const [key, u] of pair) {
    const f = Math.floor(key / R);
    const g = key % R;
    const alive = nodes - (inRegion[f] as number) - (inRegion[g] as number);
    if (alive > 0) d2 = Math.max(d2, u / alive);
  }
  const s = meanMax(store);
  const h = meanMax(homed);
  return {
    mode: `home, k=${k}`,
    links: R - 1,
    msgsPerUpdate: msgs / nodes,
    hops: 1,
    storeMean: s.mean,
    storeMax: s.max,
    homeBucketImbalance: h.max / h.mean,
    queryRemote: remote / nodes,
    queryPackets: crossing / nodes,
    down1Mean: meanMax(d1).mean,
    down1Worst: meanMax(d1).max,
    ...(k === 2 ? { down2Worst: d2 } : {}),
  };
}

/**
 * Interest-based pull: region r holds bucket b iff a node of r subscribes to b (here: lives in
 * r and is in b). An update goes directly to every other holder; every warm query is local.
 */
export function interestPull(world: World): ModeResult {
  const { regions: R, buckets: B, counts } = world;
  const { size, nodes } = totals(world);
  const store = new Float64Array(R);
  let msgs = 0;
  for (let b = 0; b < B; b++) {
    const n = size[b] as number;
    let holders = 0;
    for (let r = 0; r < R; r++) {
      if ((counts[b * R + r] as number) > 0) {
        holders++;
        store[r] = (store[r] as number) + n;
      }
    }
    msgs += n * Math.max(0, holders - 1);
  }
  const s = meanMax(store);
  // Every querier's region holds its bucket (it subscribed), so no warm query is remote and a
  // failed region hides nothing from the others (its own nodes' updates stop, as in every mode).
  // A region's first query of a bucket is one round trip to a holder (not counted here).
  return {
    mode: 'interest pull',
    links: R - 1,
    msgsPerUpdate: msgs / nodes,
    hops: 1,
    storeMean: s.mean,
    storeMax: s.max,
    queryRemote: 0,
    queryPackets: 0,
    down1Mean: 0,
    down1Worst: 0,
    down2Worst: 0,
  };
}

/** Every mode for one world; the first row (full, ring) is the baseline of the ratios. */
export function simulate(world: World): ModeResult[] {
  const homes2 = placeHomes(world, 2);
  const homes1 = new Int32Array(world.buckets);
  for (let b = 0; b < world.buckets; b++) homes1[b] = homes2[b * 2] as number;
  return [
    fullReplication(world, 'ring'),
    fullReplication(world, 'mesh'),
    homeRegion(world, homes1, 1),
    homeRegion(world, homes2, 2),
    interestPull(world),
  ];
}

// ------------------------------------------------------------------------------ report

const fmt = (x: number, d = 0): string => x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
const pct = (x: number): string => (x === 0 ? '0' : x < 0.001 ? '<0.1' : (x * 100).toFixed(1));
const ratio = (x: number, base: number): string => (base === 0 ? '-' : x / base >= 10 ? `${(x / base).toFixed(0)}×` : `${(x / base).toFixed(2)}×`);
const mib = (packets: number): string => {
  const m = (packets * PACKET_BYTES) / 2 ** 20;
  return m >= 100 ? fmt(m) : m.toFixed(1);
};

const HEADER =
  `${'mode'.padEnd(15)}${'links'.padStart(6)}${'msgs/upd'.padStart(10)}${'×full'.padStart(8)}${'hops'.padStart(5)}` +
  `${'stored/region'.padStart(15)}${'MiB'.padStart(8)}${'×full'.padStart(8)}${'max/mean'.padStart(9)}${'home bkt'.padStart(9)}` +
  `${'q remote%'.padStart(10)}${'q pkts'.padStart(8)}${'traffic'.padStart(9)}${'×full'.padStart(7)}${'1 down% mean'.padStart(13)}${'worst'.padStart(7)}${'2 down%'.padStart(8)}`;

/** Packets crossing links per node per cycle: one update plus `qpu` queries. */
export const traffic = (m: ModeResult, qpu: number): number => m.msgsPerUpdate + qpu * m.queryPackets;

function row(m: ModeResult, base: ModeResult, qpu: number): string {
  return (
    `${m.mode.padEnd(15)}${String(m.links).padStart(6)}${fmt(m.msgsPerUpdate, 2).padStart(10)}${ratio(m.msgsPerUpdate, base.msgsPerUpdate).padStart(8)}` +
    `${String(m.hops).padStart(5)}${fmt(m.storeMean).padStart(15)}${mib(m.storeMean).padStart(8)}${ratio(m.storeMean, base.storeMean).padStart(8)}` +
    `${(m.storeMax / m.storeMean).toFixed(2).padStart(9)}${(m.homeBucketImbalance === undefined ? '' : m.homeBucketImbalance.toFixed(2)).padStart(9)}` +
    `${pct(m.queryRemote).padStart(10)}${fmt(m.queryPackets, 0).padStart(8)}` +
    `${fmt(traffic(m, qpu), traffic(m, qpu) < 10 ? 2 : 0).padStart(9)}${ratio(traffic(m, qpu), traffic(base, qpu)).padStart(7)}${pct(m.down1Mean).padStart(13)}${pct(m.down1Worst).padStart(7)}` +
    `${(m.down2Worst === undefined ? '-' : pct(m.down2Worst)).padStart(8)}`
  );
}

function main(): void {
  const seed = Math.round(optNum('seed', 1));
  const cohort = optNum('cohort', 100);
  const zipf = optNum('zipf', 1, true);
  const locality = optNum('locality', 0.8, true);
  const qpu = optNum('queries', 1, true);
  const rate = optNum('rate', 1); // updates per node per hour
  if (locality > 1) throw new Error('--locality must be at most 1');
  const RS = [3, 10, 30, 100];
  const NS = [10_000, 100_000, 1_000_000];
  const t0 = performance.now();
  const grid: Array<{ regions: number; nodes: number; buckets: number; modes: ModeResult[] }> = [];
  for (const nodes of NS) {
    for (const regions of RS) {
      const world = makeWorld({ regions, nodes, cohort, zipf, locality, seed });
      grid.push({ regions, nodes, buckets: world.buckets, modes: simulate(world) });
    }
  }
  // Sensitivity at one point: locality and Zipf exponent (pull depends on both; home on neither).
  const SR = 30;
  const SN = 100_000;
  const sweeps: Array<{ locality: number; zipf: number; modes: ModeResult[] }> = [];
  for (const l of [1 / SR, 0.5, 0.8, 0.95, 1]) sweeps.push({ locality: l, zipf, modes: simulate(makeWorld({ regions: SR, nodes: SN, cohort, zipf, locality: l, seed })) });
  for (const z of [0, 0.5, 1.2]) sweeps.push({ locality, zipf: z, modes: simulate(makeWorld({ regions: SR, nodes: SN, cohort, zipf: z, locality, seed })) });
  const seconds = (performance.now() - t0) / 1000;

  const params = { seed, cohort, zipf, locality, queriesPerUpdate: qpu, updatesPerNodePerHour: rate, packetBytes: PACKET_BYTES };
  if (JSON_OUT) {
    process.stdout.write(JSON.stringify({ params, seconds, grid, sweeps: { regions: SR, nodes: SN, runs: sweeps } }) + '\n');
    return;
  }
  const L: string[] = [];
  L.push(`federation scaling simulation: seed ${seed}, mean cohort ${cohort} nodes/bucket, Zipf s=${zipf}, locality λ=${locality}, ${qpu} quer${qpu === 1 ? 'y' : 'ies'} per update, ${PACKET_BYTES} B/packet (${seconds.toFixed(1)} s)`);
  L.push('msgs/upd: inter-region packet transfers per update (each verified at the receiving broker); hops: link hops to the farthest copy;');
  L.push('stored/region: packets per region (mean; max/mean = imbalance); home bkt: buckets homed per region, max/mean; q remote%: queries');
  L.push('needing an inter-region round trip; q pkts: packets crossing a link per query; traffic: packets crossing links per update plus');
  L.push(`${qpu} quer${qpu === 1 ? 'y' : 'ies'} (--queries); N down%: surviving regions' queries left unanswerable`);
  L.push('when 1 region (mean over which one, worst) or the worst pair of regions is down. ×full: ratio to "full, ring" of the same run.');
  for (const g of grid) {
    L.push('');
    L.push(`R = ${g.regions} regions, N = ${fmt(g.nodes)} nodes, B = ${fmt(g.buckets)} buckets`);
    L.push(`  ${HEADER}`);
    const base = g.modes[0] as ModeResult;
    for (const m of g.modes) L.push(`  ${row(m, base, qpu)}`);
  }
  L.push('');
  L.push(`summary: packets a region receives over its links per second, mean over regions (updates + ${qpu} quer${qpu === 1 ? 'y' : 'ies'} per update, each node updating ${rate}×/hour),`);
  L.push('and packets stored per region (the most loaded region), MiB at 320 B/packet');
  const modesShown = [0, 1, 3, 4];
  L.push(`  ${'R'.padStart(4)}${'N'.padStart(11)}  ${modesShown.map((i) => `${(grid[0]?.modes[i] as ModeResult).mode} in/s`.padStart(20)).join('')}  ${modesShown.slice(1).map((i) => `${i === 1 ? 'full' : (grid[0]?.modes[i] as ModeResult).mode} MiB`.padStart(19)).join('')}`);
  for (const g of grid) {
    const perRegion = (m: ModeResult): number => (traffic(m, qpu) * g.nodes * rate) / 3600 / g.regions;
    const maxMib = (m: ModeResult): string => mib(m.storeMax);
    L.push(
      `  ${String(g.regions).padStart(4)}${fmt(g.nodes).padStart(11)}  ${modesShown.map((i) => fmt(perRegion(g.modes[i] as ModeResult)).padStart(20)).join('')}` +
        `  ${modesShown.slice(1).map((i) => maxMib(g.modes[i] as ModeResult).padStart(19)).join('')}`,
    );
  }
  L.push('');
  L.push(`sensitivity at R = ${SR}, N = ${fmt(SN)} (full replication is the same in every run: ring ${fmt((grid.find((g) => g.regions === SR && g.nodes === SN)?.modes[0] as ModeResult).msgsPerUpdate, 0)} msgs/update, N packets per region)`);
  L.push(`  ${'λ'.padStart(6)}${'s'.padStart(5)}  ${HEADER}`);
  for (const s of sweeps) {
    const base = s.modes[0] as ModeResult;
    for (const m of s.modes.slice(2)) L.push(`  ${s.locality.toFixed(3).padStart(6)}${s.zipf.toFixed(1).padStart(5)}  ${row(m, base, qpu)}`);
  }
  process.stdout.write(L.join('\n') + '\n');
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
