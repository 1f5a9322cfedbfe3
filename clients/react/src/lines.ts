/**
 * The lines a view holds: a chunked store with a version number.
 *
 * Appending a line is O(1) (it goes into the tail chunk), prepending a page of history is one new
 * chunk at the front, and dropping the oldest lines past `maxLines` drops whole chunks plus an
 * offset into the first. A chunk's existing slots are never rewritten, so a published
 * {@link LogLines} view (a copy of the chunk list, a first position and a length) stays valid
 * after later changes: React can hold last frame's view while this frame's is built, and nothing
 * is ever copied line by line.
 */
import { compareStreamIds, type LogLine } from "@buildlogs/client";

/** Lines per live chunk: big enough that the chunk list stays short, small enough to drop finely. */
const CHUNK = 512;

interface Chunk {
  /** The absolute position of `lines[0]`. */
  readonly base: number;
  readonly lines: LogLine[];
}

/**
 * An immutable view of the lines at one version: index 0 is the oldest line held.
 *
 * Positions are absolute: a line keeps its position while lines are added or dropped around it,
 * so `first` moving down by `k` means `k` lines were prepended above, and moving up means the
 * oldest were dropped. A virtualised list uses positions as row keys and to keep rows in place.
 */
export interface LogLines extends Iterable<LogLine> {
  /** Increases with every change (a new view per change). */
  readonly version: number;
  readonly length: number;
  /** Absolute position of index 0. */
  readonly first: number;
  /** The line at `index` (0 = oldest held), or undefined outside `0..length`. */
  at(index: number): LogLine | undefined;
  /** Lines `start..end` (end exclusive), as an array: O(end - start). */
  slice(start?: number, end?: number): LogLine[];
  /** Every line as an array: O(length); prefer `at` for rendering. */
  toArray(): LogLine[];
  /**
   * Where line `id` stands (the lines are in id order): the index of the first line whose id is
   * `id` or after it (`length` when every line is before it), and whether that line is `id`
   * itself. O(log length).
   */
  find(id: string): { index: number; exact: boolean };
}

class View implements LogLines {
  constructor(
    readonly version: number,
    private readonly chunks: readonly Chunk[],
    readonly first: number,
    readonly length: number,
  ) {}

  at(index: number): LogLine | undefined {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) return undefined;
    const pos = this.first + index;
    // Binary search for the last chunk whose base <= pos.
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.chunks[mid]!.base <= pos) lo = mid;
      else hi = mid - 1;
    }
    const chunk = this.chunks[lo]!;
    return chunk.lines[pos - chunk.base];
  }

  slice(start = 0, end = this.length): LogLine[] {
    const from = Math.max(0, Math.min(this.length, start < 0 ? this.length + start : start));
    const to = Math.max(from, Math.min(this.length, end < 0 ? this.length + end : end));
    const out: LogLine[] = [];
    for (let i = from; i < to; i++) out.push(this.at(i)!);
    return out;
  }

  toArray(): LogLine[] {
    return this.slice();
  }

  find(id: string): { index: number; exact: boolean } {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((compareStreamIds(this.at(mid)!.id, id) ?? 0) < 0) lo = mid + 1;
      else hi = mid;
    }
    return { index: lo, exact: lo < this.length && this.at(lo)!.id === id };
  }

  *[Symbol.iterator](): Iterator<LogLine> {
    const end = this.first + this.length;
    for (const chunk of this.chunks) {
      const from = Math.max(this.first, chunk.base) - chunk.base;
      const to = Math.min(end, chunk.base + chunk.lines.length) - chunk.base;
      for (let i = from; i < to; i++) yield chunk.lines[i]!;
    }
  }
}

/** An empty view (version 0), shared by every hook before it has lines (and on the server). */
export const EMPTY_LINES: LogLines = new View(0, [], 0, 0);

/** The mutable store behind the views. One per followed job. */
export class LineStore {
  #chunks: Chunk[] = [];
  /** Absolute position of the oldest line held. */
  #first = 0;
  /** Absolute position one past the newest line held. */
  #end = 0;
  #version = 0;
  #view: LogLines = EMPTY_LINES;
  #dirty = false;

  constructor(private maxLines: number) {}

  get length(): number {
    return this.#end - this.#first;
  }

  /** The oldest line held. */
  get oldest(): LogLine | undefined {
    const chunk = this.#chunks[0];
    return chunk?.lines[this.#first - chunk.base];
  }

  /** The newest line held. */
  get newest(): LogLine | undefined {
    return this.#chunks.at(-1)?.lines.at(-1);
  }

  setMaxLines(maxLines: number): void {
    this.maxLines = Math.max(1, maxLines);
  }

  /** Appends a line below the newest. Returns how many of the oldest were dropped to stay within `maxLines`. */
  append(line: LogLine): number {
    let tail = this.#chunks.at(-1);
    if (!tail || tail.lines.length >= CHUNK) {
      tail = { base: this.#end, lines: [] };
      this.#chunks.push(tail);
    }
    tail.lines.push(line);
    this.#end += 1;
    this.#dirty = true;
    const excess = this.length - this.maxLines;
    if (excess > 0) this.#dropOldest(excess);
    return Math.max(0, excess);
  }

  /**
   * Puts older lines (oldest first) above the oldest held. Past `maxLines`, the newest lines go
   * (the reader is looking at the top); returns how many went.
   */
  prepend(lines: readonly LogLine[]): number {
    const page = lines.slice(Math.max(0, lines.length - this.maxLines));
    if (page.length === 0) return 0;
    this.#first -= page.length;
    this.#chunks.unshift({ base: this.#first, lines: page });
    this.#dirty = true;
    const excess = this.length - this.maxLines;
    if (excess > 0) this.#dropNewest(excess);
    return Math.max(0, excess);
  }

  /** Replaces every line with `lines` (oldest first), placed right after the current ones. */
  replace(lines: readonly LogLine[]): void {
    const kept = lines.slice(Math.max(0, lines.length - this.maxLines));
    this.#first = this.#end;
    this.#chunks = kept.length > 0 ? [{ base: this.#first, lines: kept }] : [];
    this.#end = this.#first + kept.length;
    this.#dirty = true;
  }

  /** The view of the current contents: the same object until something changes. */
  view(): LogLines {
    if (this.#dirty) {
      this.#dirty = false;
      this.#version += 1;
      this.#view = new View(this.#version, this.#chunks.slice(), this.#first, this.length);
    }
    return this.#view;
  }

  #dropOldest(count: number): void {
    this.#first += count;
    while (this.#chunks.length > 0) {
      const head = this.#chunks[0]!;
      if (head.base + head.lines.length > this.#first) break;
      this.#chunks.shift();
    }
  }

  #dropNewest(count: number): void {
    this.#end -= count;
    while (this.#chunks.length > 0) {
      const tail = this.#chunks.at(-1)!;
      if (tail.base >= this.#end) {
        this.#chunks.pop();
        continue;
      }
      // A chunk is never rewritten (older views read it): keep a shortened copy instead.
      if (tail.base + tail.lines.length > this.#end) {
        this.#chunks[this.#chunks.length - 1] = { base: tail.base, lines: tail.lines.slice(0, this.#end - tail.base) };
      }
      break;
    }
  }
}
