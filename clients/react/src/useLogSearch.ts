/**
 * `useLogSearch(jobId, query, options)`: find in a job's whole log through the search endpoint
 * (`/logs/search`), page by page, with a current match that `next()` and `previous()` move.
 *
 * The browser's own find sees only the rows a virtualised list draws; this asks the server,
 * which scans every retained line. Matches come a page at a time, oldest first, each exactly
 * once: `matches` holds those found so far and `complete` says whether pages remain (a view
 * shows "3 of 12+" until it is). `next()` past the last match found loads the next page.
 */
import {
  type BuildlogsClient,
  BuildlogsError,
  createBuildlogsClient,
  type LogLine,
  NetworkError,
} from "@buildlogs/client";
import { useEffect, useLayoutEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";

/** How to reach the server: as `useJobLogs` takes it. */
export interface ConnectionProps {
  /** The server's origin (`""`: the page's own). Ignored when `client` is given. */
  baseUrl?: string;
  /** Returns the session token (`useAuth().getToken` as is); the latest function is always used. */
  getToken?: () => Promise<string | null> | string | null;
  /** A client of your own, instead of `baseUrl` and `getToken`. */
  client?: BuildlogsClient;
  /** `credentials` for every request. */
  credentials?: RequestInit["credentials"];
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

/**
 * A client for `baseUrl` and `getToken` (or `client` as is), stable across renders: it always
 * calls the latest `getToken` and `fetch`. For the one-off requests a view makes (search,
 * download); `useJobLogs` keeps its own.
 */
export function useBuildlogsClient(options: ConnectionProps): BuildlogsClient {
  const latest = useRef(options);
  useLayoutEffect(() => {
    latest.current = options;
  });
  const { client, baseUrl = "", credentials } = options;
  return useMemo(
    () =>
      client ??
      createBuildlogsClient({
        baseUrl,
        getToken: () => latest.current.getToken?.() ?? null,
        fetch: (input, init) => (latest.current.fetch ?? globalThis.fetch)(input, init),
        ...(credentials ? { credentials } : {}),
      }),
    [client, baseUrl, credentials],
  );
}

export interface UseLogSearchOptions extends ConnectionProps {
  /** `query` is a pattern in the syntax of Rust's `regex` crate (default false: a literal). */
  regex?: boolean;
  /** Letter case must match (default false). */
  caseSensitive?: boolean;
  /** Matches per page, 1-500 (default 100). */
  pageSize?: number;
  /** Wait this long after the last change of the query before searching (default 250 ms). */
  debounceMs?: number;
}

/** What a search has found so far. */
export interface LogSearchState {
  /** The query these matches are for (`""`: no search). */
  readonly query: string;
  /** The matching lines found so far, oldest first, each once. */
  readonly matches: readonly LogLine[];
  /** Every page was read: `matches` is all of them. */
  readonly complete: boolean;
  /** A page is loading. */
  readonly loading: boolean;
  /** Why the last page failed: for a bad pattern, a `BadRequestError` whose message is the server's. */
  readonly error: BuildlogsError | null;
  /** The index in `matches` of the current match, -1 before `next()` or `previous()` chose one. */
  readonly current: number;
}

export interface LogSearch extends LogSearchState {
  /** `matches[current]`, or null. */
  readonly currentMatch: LogLine | null;
  /**
   * Moves to the next match, loading the next page past the last one found; from the last
   * match of a complete search, back to the first. Resolves to the new current match.
   */
  next(): Promise<LogLine | null>;
  /** Moves to the previous match; from the first, to the last (loading the remaining pages). */
  previous(): Promise<LogLine | null>;
}

const IDLE: LogSearchState = Object.freeze({
  query: "",
  matches: Object.freeze([]) as readonly LogLine[],
  complete: true,
  loading: false,
  error: null,
  current: -1,
});

interface SearchSettings {
  regex: boolean;
  caseSensitive: boolean;
  pageSize: number;
}

/** One query's search: its pages, its current match, its listeners. Closed when the query changes. */
class SearchSession {
  #state: LogSearchState;
  readonly #listeners = new Set<() => void>();
  readonly #controller = new AbortController();
  /** `after_id` of the next page: the last line the previous page examined. */
  #cursor: string | undefined;
  /** Loads and moves are serialised: a quick double Enter moves twice, in order. */
  #queue: Promise<unknown> = Promise.resolve();
  #loadedAny = false;

  constructor(
    private readonly client: BuildlogsClient,
    private readonly jobId: string,
    query: string,
    private readonly settings: SearchSettings,
  ) {
    this.#state = { ...IDLE, query, complete: false, loading: true };
  }

  get state(): LogSearchState {
    return this.#state;
  }

  subscribe = (listener: () => void): (() => void) => {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  };

  close(): void {
    this.#controller.abort();
    this.#listeners.clear();
  }

  /** The first page (with at least one match, or the end). */
  start(): void {
    void this.#serial(() => (this.#loadedAny ? Promise.resolve() : this.#loadPage())).catch(() => undefined);
  }

  next(): Promise<LogLine | null> {
    return this.#serial(async () => {
      const { current, matches } = this.#state;
      if (current + 1 < matches.length) return this.#select(current + 1);
      if (!this.#state.complete) {
        await this.#loadPage();
        if (current + 1 < this.#state.matches.length) return this.#select(current + 1);
      }
      return this.#select(this.#state.matches.length > 0 ? 0 : -1);
    });
  }

  previous(): Promise<LogLine | null> {
    return this.#serial(async () => {
      const { current } = this.#state;
      if (current > 0) return this.#select(current - 1);
      while (!this.#state.complete) await this.#loadPage();
      return this.#select(this.#state.matches.length - 1);
    });
  }

  #serial<T>(run: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  #select(index: number): LogLine | null {
    this.#set({ current: index });
    return this.#state.matches[index] ?? null;
  }

  /** Reads pages until one brings a match or none remain (a page scans at most 100,000 lines). */
  async #loadPage(): Promise<void> {
    if (this.#controller.signal.aborted || this.#state.complete) return;
    this.#loadedAny = true;
    this.#set({ loading: true, error: null });
    try {
      for (;;) {
        const page = await this.client.getSearchPage(this.jobId, this.#state.query, {
          regex: this.settings.regex,
          caseSensitive: this.settings.caseSensitive,
          afterId: this.#cursor,
          limit: this.settings.pageSize,
          signal: this.#controller.signal,
        });
        if (this.#controller.signal.aborted) return;
        const complete = !page.has_more || page.scanned_to === null;
        if (page.scanned_to !== null) this.#cursor = page.scanned_to;
        this.#set({
          matches: page.matches.length > 0 ? [...this.#state.matches, ...page.matches] : this.#state.matches,
          complete,
        });
        if (complete || page.matches.length > 0) break;
      }
      this.#set({ loading: false });
    } catch (error) {
      if (this.#controller.signal.aborted) return;
      const failure = error instanceof BuildlogsError ? error : new NetworkError("search failed", { cause: error });
      // A refused query (a bad pattern) will not get better: the search is over.
      this.#set({ loading: false, error: failure, complete: failure.status === 400 || this.#state.complete });
      throw failure;
    }
  }

  #set(patch: Partial<LogSearchState>): void {
    if (this.#controller.signal.aborted) return;
    this.#state = { ...this.#state, ...patch };
    for (const listener of [...this.#listeners]) listener();
  }
}

const noSubscription = () => () => undefined;

/**
 * Searches `jobId`'s whole log for `query` (nothing while it is empty), a moment after it last
 * changed. A new query, job or toggle starts over.
 */
export function useLogSearch(
  jobId: string | null | undefined,
  query: string,
  options: UseLogSearchOptions = {},
): LogSearch {
  const client = useBuildlogsClient(options);
  const { regex = false, caseSensitive = false, pageSize = 100, debounceMs = 250 } = options;
  const [session, setSession] = useState<SearchSession | null>(null);

  useEffect(() => {
    if (!jobId || query === "") {
      setSession(null);
      return;
    }
    const next = new SearchSession(client, jobId, query, { regex, caseSensitive, pageSize });
    setSession(next);
    const timer = setTimeout(() => next.start(), debounceMs);
    return () => {
      clearTimeout(timer);
      next.close();
    };
  }, [client, jobId, query, regex, caseSensitive, pageSize, debounceMs]);

  const state = useSyncExternalStore(
    session ? session.subscribe : noSubscription,
    () => session?.state ?? IDLE,
    () => IDLE,
  );
  return useMemo(
    () => ({
      ...state,
      currentMatch: state.matches[state.current] ?? null,
      next: () => session?.next() ?? Promise.resolve(null),
      previous: () => session?.previous() ?? Promise.resolve(null),
    }),
    [state, session],
  );
}
