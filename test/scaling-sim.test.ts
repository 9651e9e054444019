import t from 'tap';
import {
  flood,
  fullReplication,
  homeRegion,
  hrwScore,
  interestPull,
  makeWorld,
  meshLinks,
  regionNames,
  rendezvousHomes,
  ringLinks,
  type World,
} from '../bench/scaling-sim.js';
import { prng } from './helpers/prng.js';

const bucket = (i: number): string => `qis/1/o/sim/${i}`;

t.test('scaling-sim - rendezvous hash is stable: pinned homes, and the order of the region list does not matter', async (t) => {
  const regions = regionNames(10);
  // Computed independently with Python's hashlib: sha256(bucket + "\0" + region)[0:6], highest first.
  t.equal(hrwScore(bucket(0), 'region-0'), 0xd8257c3d5b87);
  const pinned: Array<[number, string, string]> = [
    [0, 'region-0', 'region-7'],
    [1, 'region-2', 'region-4'],
    [2, 'region-2', 'region-4'],
    [3, 'region-4', 'region-0'],
    [4, 'region-0', 'region-3'],
  ];
  for (const [b, first, second] of pinned) {
    t.same(rendezvousHomes(bucket(b), regions, 2).map((i) => regions[i]), [first, second], `bucket ${b}`);
  }
  const rand = prng(5);
  const shuffled = [...regions].sort(() => rand() - 0.5);
  t.not(shuffled.join(), regions.join(), 'the list really is shuffled');
  for (let b = 0; b < 500; b++) {
    const a = rendezvousHomes(bucket(b), regions, 2).map((i) => regions[i]);
    const s = rendezvousHomes(bucket(b), shuffled, 2).map((i) => shuffled[i]);
    if (a.join() !== s.join()) t.fail(`bucket ${b}: ${a} vs ${s}`);
  }
});

t.test('scaling-sim - rendezvous hash is balanced: 10,000 buckets over 10 regions within ±15 % of the mean, 6,000 over 30 within ±30 %', async (t) => {
  // Binomial counts: mean 1,000 (sd ≈ 30) and mean 200 (sd ≈ 14); the bounds are 5 and 4 sd.
  for (const [r, buckets, bound] of [[10, 10_000, 0.15], [30, 6_000, 0.3]] as const) {
    const regions = regionNames(r);
    const load = new Array<number>(r).fill(0);
    const second = new Array<number>(r).fill(0);
    for (let b = 0; b < buckets; b++) {
      const [h1, h2] = rendezvousHomes(bucket(b), regions, 2) as [number, number];
      if (h1 === h2) t.fail(`bucket ${b}: the same home twice`);
      load[h1] = (load[h1] as number) + 1;
      second[h2] = (second[h2] as number) + 1;
    }
    const mean = buckets / r;
    for (const l of [...load, ...second]) {
      if (Math.abs(l - mean) > bound * mean) t.fail(`R=${r}: a region holds ${l} buckets, mean ${mean}`);
    }
    t.pass(`R=${r}: max ${Math.max(...load)}, min ${Math.min(...load)}, mean ${mean}`);
  }
});

t.test('scaling-sim - adding an 11th region moves about 1/11 of the buckets, all to the new region', async (t) => {
  const before = regionNames(10);
  const after = regionNames(11);
  let moved = 0;
  let movedPairs = 0;
  for (let b = 0; b < 5_000; b++) {
    const h0 = rendezvousHomes(bucket(b), before, 1)[0] as number;
    const h1 = rendezvousHomes(bucket(b), after, 1)[0] as number;
    if (h0 !== h1) {
      moved++;
      if (after[h1] !== 'region-10') t.fail(`bucket ${b} moved from ${before[h0]} to ${after[h1]}`);
    }
    // k = 2: a home set that changed now contains the new region, and keeps one old home.
    const s0 = rendezvousHomes(bucket(b), before, 2).map((i) => before[i]);
    const s1 = rendezvousHomes(bucket(b), after, 2).map((i) => after[i]);
    if (s0.join() !== s1.join()) {
      movedPairs++;
      if (!s1.includes('region-10') || !s1.some((x) => s0.includes(x))) t.fail(`bucket ${b}: ${s0} → ${s1}`);
    }
  }
  // Expected 5,000/11 ≈ 455 (sd ≈ 20) and, for k = 2, 2 × 455 ≈ 909 (sd ≈ 28): bounds about ±3.5 sd.
  t.ok(moved > 385 && moved < 525, `${moved} buckets moved (expected about 455)`);
  t.ok(movedPairs > 810 && movedPairs < 1010, `${movedPairs} home pairs changed (expected about 909)`);
});

t.test('scaling-sim - flooding counts on small rings and meshes, counted by hand', async (t) => {
  // Ring of 3 (also a mesh): A→B, A→C, then B→C and C→B, both stale.
  t.same(flood(ringLinks(3), 0), { messages: 4, hops: 1, reached: 3 });
  // Ring of 4: A→B, A→D, B→C, D→C, then C→D stale.
  t.same(flood(ringLinks(4), 0), { messages: 5, hops: 2, reached: 4 });
  // Ring of 5: A→B, A→E, B→C, E→D, then C→D and D→C stale.
  t.same(flood(ringLinks(5), 2), { messages: 6, hops: 2, reached: 5 });
  // Mesh of 4: 3 from A, then B, C, D each forward to their 2 other peers: 3 + 6.
  t.same(flood(meshLinks(4), 1), { messages: 9, hops: 1, reached: 4 });
  t.same(flood(meshLinks(1), 0), { messages: 0, hops: 0, reached: 1 });
});

// A world small enough to count by hand: 3 regions, 2 buckets.
// bucket 0: 2 nodes in region 0, 1 node in region 1; bucket 1: 3 nodes in region 2.
const tiny: World = { regions: 3, buckets: 2, counts: Int32Array.from([2, 1, 0, 0, 0, 3]) };

t.test('scaling-sim - full replication and interest pull on the hand-counted world', async (t) => {
  const ring = fullReplication(tiny, 'ring');
  t.equal(ring.msgsPerUpdate, 4); // every update floods a ring of 3: 4 messages
  t.equal(ring.storeMean, 6);
  t.equal(ring.storeMax, 6);
  t.equal(ring.queryRemote, 0);
  const pull = interestPull(tiny);
  // bucket 0 is held by regions 0 and 1: each of its 3 updates is 1 message; bucket 1 only by region 2: 0.
  t.equal(pull.msgsPerUpdate, 3 / 6);
  t.equal(pull.storeMean, 3); // region 0: bucket 0 (3), region 1: bucket 0 (3), region 2: bucket 1 (3)
  t.equal(pull.storeMax, 3);
  t.equal(pull.queryRemote, 0);
});

t.test('scaling-sim - home-region routing on the hand-counted world, k = 1 and k = 2', async (t) => {
  // k = 1: bucket 0 → region 1, bucket 1 → region 0.
  const h1 = homeRegion(tiny, Int32Array.from([1, 0]), 1);
  // updates: bucket 0 from region 0 (2 × 1 msg), from region 1 (1 × 0), bucket 1 from region 2 (3 × 1) = 5 of 6
  t.equal(h1.msgsPerUpdate, 5 / 6);
  // stored: region 0 = bucket 1 (3) + its own bucket-0 clients (2) = 5; region 1 = bucket 0 (3); region 2 = own (3)
  t.equal(h1.storeMean, 11 / 3);
  t.equal(h1.storeMax, 5);
  t.equal(h1.homeBucketImbalance, 1.5); // homed buckets 1, 1, 0
  t.equal(h1.queryRemote, 5 / 6); // the 2 bucket-0 queriers in region 0 and the 3 bucket-1 queriers in region 2
  t.equal(h1.queryPackets, (2 * 3 + 3 * 3) / 6);
  // region 0 down: bucket 1 lost for its 3 queriers of the 4 surviving; region 1 down: bucket 0 lost for 2 of 5; region 2: none
  t.equal(h1.down1Worst, 3 / 4);
  t.equal(h1.down1Mean, (3 / 4 + 2 / 5 + 0) / 3);

  // k = 2: bucket 0 → regions 1, 2; bucket 1 → regions 0, 1.
  const h2 = homeRegion(tiny, Int32Array.from([1, 2, 0, 1]), 2);
  // bucket 0 from region 0: 2 × 2; from region 1 (a home): 1 × 1; bucket 1 from region 2: 3 × 2 → 11 of 6
  t.equal(h2.msgsPerUpdate, 11 / 6);
  // region 0 = bucket 1 (3) + own bucket-0 (2) = 5; region 1 = 3 + 3 = 6; region 2 = bucket 0 (3) + own bucket-1 (3) = 6
  t.equal(h2.storeMean, 17 / 3);
  t.equal(h2.storeMax, 6);
  t.equal(h2.queryRemote, 5 / 6);
  t.equal(h2.down1Worst, 0);
  // regions 1 and 2 down: bucket 0 lost for its 2 queriers in region 0, the only survivors: 100 %
  t.equal(h2.down2Worst, 1);
});

t.test('scaling-sim - makeWorld places every node, is deterministic, and honours locality', async (t) => {
  const o = { regions: 10, nodes: 20_000, cohort: 100, zipf: 1, locality: 0.8, seed: 3 };
  const w = makeWorld(o);
  t.equal(w.buckets, 200);
  t.equal(w.counts.reduce((a, b) => a + b, 0), 20_000);
  t.same(makeWorld(o).counts, w.counts, 'same seed, same world');
  t.notSame(makeWorld({ ...o, seed: 4 }).counts, w.counts, 'another seed, another world');
  // share of nodes in the most populated region of their bucket: about λ = 0.8
  let top = 0;
  for (let b = 0; b < w.buckets; b++) top += Math.max(...w.counts.subarray(b * 10, b * 10 + 10));
  t.ok(top / 20_000 > 0.77 && top / 20_000 < 0.83, `${top / 20_000}`);
  // λ = 1: every bucket lives in one region, so interest pull sends nothing between regions
  const local = makeWorld({ ...o, locality: 1 });
  for (let b = 0; b < local.buckets; b++) {
    if (local.counts.subarray(b * 10, b * 10 + 10).filter((c) => c > 0).length > 1) t.fail(`bucket ${b} spans regions`);
  }
  t.equal(interestPull(local).msgsPerUpdate, 0);
});
