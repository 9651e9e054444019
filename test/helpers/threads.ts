// The threads of a process on Linux, read from /proc: their niceness (the broker's verifyNice).
import { readFileSync, readdirSync } from 'node:fs';

/** Each thread of process `pid` and its niceness (Linux: field 19 of /proc/PID/task/TID/stat). */
export function threadNice(pid: number): { tid: number; nice: number }[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return [{ tid: Number(tid), nice: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]) }];
    } catch {
      return []; // the thread ended
    }
  });
}

/** Waits (up to 10 s) until `n` threads of `pid` run at niceness `nice`; returns the threads then. */
export async function untilNiced(pid: number, nice: number, n: number): Promise<{ tid: number; nice: number }[]> {
  for (let i = 0; threadNice(pid).filter((x) => x.nice === nice).length < n && i <= 200; i++) await new Promise((r) => setTimeout(r, 50));
  return threadNice(pid);
}
