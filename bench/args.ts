/** Command-line options of the benches: `--json`, `--name=value`. */

export const argv = process.argv.slice(2);
export const JSON_OUT = argv.includes('--json');

/** `--name=N`, a positive number (0 too with `allowZero`), or `dflt` when absent. */
export function optNum(name: string, dflt: number, allowZero = false): number {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  if (a === undefined) return dflt;
  const v = Number(a.slice(name.length + 3));
  if (!Number.isFinite(v) || v < 0 || (v === 0 && !allowZero)) throw new Error(`--${name} must be a positive number`);
  return v;
}

/** `--name=text`, or undefined when absent. */
export function optStr(name: string): string | undefined {
  return argv.find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3);
}
