/** Stream ids `<ms>-<seq>` (both u64), as Redis and the server write them. */
const STREAM_ID = /^(\d{1,20})-(\d{1,20})$/;
const U64_MAX = (1n << 64n) - 1n;

function parse(id: string): [bigint, bigint] | undefined {
  const match = STREAM_ID.exec(id);
  if (!match) return undefined;
  const ms = BigInt(match[1]!);
  const seq = BigInt(match[2]!);
  return ms > U64_MAX || seq > U64_MAX ? undefined : [ms, seq];
}

/** Negative, zero or positive as `a` is before, equal to or after `b`; `undefined` if either is malformed. */
export function compareStreamIds(a: string, b: string): number | undefined {
  const x = parse(a);
  const y = parse(b);
  if (!x || !y) return undefined;
  if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
  return x[1] === y[1] ? 0 : x[1] < y[1] ? -1 : 1;
}

/**
 * The smallest id after `id`: the history endpoint's exclusive `before_id` that returns exactly
 * the lines up to and including `id`. `undefined` if `id` is malformed or the last possible id.
 */
export function nextStreamId(id: string): string | undefined {
  const parsed = parse(id);
  if (!parsed) return undefined;
  const [ms, seq] = parsed;
  if (seq < U64_MAX) return `${ms}-${seq + 1n}`;
  return ms < U64_MAX ? `${ms + 1n}-0` : undefined;
}
