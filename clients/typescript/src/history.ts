import createClient, { type Client } from "openapi-fetch";

import { errorFromResponse, toBuildlogsError } from "./errors.js";
import { type ConnectionOptions, resolveFetch, trimBaseUrl } from "./http.js";
import type { HistoryPage, LogLine, paths } from "./types.js";

/** The typed openapi-fetch client for the spec's paths. */
export type ApiClient = Client<paths>;

/**
 * An openapi-fetch client for the buildlogs API that sends `Authorization: Bearer <getToken()>`
 * on every request.
 */
export function createApiClient(options: ConnectionOptions): ApiClient {
  const doFetch = resolveFetch(options);
  const api = createClient<paths>({
    baseUrl: trimBaseUrl(options.baseUrl),
    fetch: (request: Request) => doFetch(request),
    ...(options.credentials ? { credentials: options.credentials } : {}),
  });
  const getToken = options.getToken;
  if (getToken) {
    api.use({
      async onRequest({ request }) {
        const token = await getToken();
        if (token) request.headers.set("Authorization", `Bearer ${token}`);
        return request;
      },
    });
  }
  return api;
}

export interface HistoryPageOptions {
  /** Exclusive upper bound: only lines strictly older than this id. Omit for the newest lines. */
  beforeId?: string | undefined;
  /** Exclusive lower bound: only lines strictly newer than this id, the oldest of them. */
  afterId?: string | undefined;
  /**
   * A line's id (its permalink): the page centred on it (the line itself when still retained,
   * about half the page before it, the rest after).
   */
  aroundId?: string | undefined;
  /** Lines per page, 1-500 (server default 100). */
  limit?: number | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * Fetches one page of history: the newest, or at most one cursor of `beforeId`, `afterId` and
 * `aroundId` (more than one is a `BadRequestError` from the server). Throws a typed
 * {@link BuildlogsError} subclass on any error (`UnauthorizedError`, `NotFoundError`,
 * `BadRequestError`, ...). No retries.
 */
export async function fetchHistoryPage(
  api: ApiClient,
  jobId: string,
  options: HistoryPageOptions = {},
): Promise<HistoryPage> {
  const query: { before_id?: string; after_id?: string; around_id?: string; limit?: number } = {};
  if (options.beforeId !== undefined) query.before_id = options.beforeId;
  if (options.afterId !== undefined) query.after_id = options.afterId;
  if (options.aroundId !== undefined) query.around_id = options.aroundId;
  if (options.limit !== undefined) query.limit = options.limit;
  let result;
  try {
    result = await api.GET("/api/jobs/{job_id}/logs", {
      params: { path: { job_id: jobId }, query },
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw toBuildlogsError(error, "history request failed");
  }
  if (result.error !== undefined || !result.response.ok || result.data === undefined) {
    throw await errorFromResponse(result.response, result.error ?? null);
  }
  return {
    ...result.data,
    oldest_id: result.data.oldest_id ?? null,
    newest_id: result.data.newest_id ?? null,
    has_newer: result.data.has_newer ?? false,
  };
}

/**
 * Pages through a job's history (each page's lines oldest first). Backwards by default: the
 * newest page first, until `has_more` is false, visiting every retained line older than
 * `beforeId` exactly once. With `afterId`, forwards: the oldest page first, until `has_newer`
 * is false, visiting every retained line newer than `afterId` exactly once, lines appended
 * while paging included.
 */
export async function* historyPages(
  api: ApiClient,
  jobId: string,
  options: HistoryPageOptions = {},
): AsyncGenerator<HistoryPage, void, undefined> {
  if (options.afterId !== undefined) {
    let afterId: string = options.afterId;
    for (;;) {
      const page = await fetchHistoryPage(api, jobId, { ...options, afterId });
      yield page;
      if (!page.has_newer || page.newest_id === null) return;
      afterId = page.newest_id;
    }
  }
  let beforeId = options.beforeId;
  for (;;) {
    const page = await fetchHistoryPage(api, jobId, { ...options, beforeId });
    yield page;
    const oldest = page.oldest_id;
    if (!page.has_more || oldest === null) return;
    beforeId = oldest;
  }
}

export interface HistoryPagerOptions {
  /**
   * Where to start: lines strictly older than this id. A function is called (once) before the
   * first fetch, e.g. to wait for a stream's `start` event and use its `history_cursor`.
   * Omitted (or resolving to `undefined`): start from the newest line.
   */
  beforeId?: string | undefined | (() => Promise<string | undefined> | string | undefined);
  /**
   * Open at a line's permalink instead: the first {@link HistoryPager.loadEarlier} or
   * {@link HistoryPager.loadLater} call returns the page around it, and later calls page out
   * from there both ways. Takes precedence over `beforeId`.
   */
  aroundId?: string | undefined;
  /** Lines per page, 1-500 (server default 100). */
  limit?: number | undefined;
}

/**
 * "Load earlier" (and, from a permalink, "Load later") over a job's history: each
 * {@link HistoryPager.loadEarlier} call returns the next older page's lines (oldest first, ready
 * to prepend), each {@link HistoryPager.loadLater} call the next newer page's (ready to append).
 * Calls are serialised, so a double-click never fetches the same page twice.
 */
export class HistoryPager {
  readonly #api: ApiClient;
  readonly #jobId: string;
  readonly #limit: number | undefined;
  #start: HistoryPagerOptions["beforeId"];
  #aroundId: string | undefined;
  #started = false;
  #cursor: string | undefined;
  #newerCursor: string | undefined;
  #hasMore = true;
  #hasNewer = false;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(api: ApiClient, jobId: string, options: HistoryPagerOptions = {}) {
    this.#api = api;
    this.#jobId = jobId;
    this.#limit = options.limit;
    this.#start = options.beforeId;
    this.#aroundId = options.aroundId;
    // Opened at a permalink, the first page can be had either way.
    if (this.#aroundId !== undefined) this.#hasNewer = true;
  }

  /** Whether newer lines may exist (after a permalink's page said `has_newer`). */
  get hasNewer(): boolean {
    return this.#hasNewer;
  }

  /** Whether older lines may exist (true until a page says `has_more: false`). */
  get hasMore(): boolean {
    return this.#hasMore;
  }

  /** The `before_id` of the next page (`undefined` before the first page when starting at the newest line). */
  get cursor(): string | undefined {
    return this.#cursor;
  }

  /**
   * Fetches the next older page and returns its lines, oldest first (prepend them). Returns `[]`
   * once history is exhausted. Throws a typed {@link BuildlogsError} on failure; the pager is
   * unchanged then, so calling again retries the same page.
   */
  loadEarlier(options: { signal?: AbortSignal } = {}): Promise<LogLine[]> {
    const run = this.#queue.then(() => this.#loadEarlier(options.signal));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Fetches the next newer page and returns its lines, oldest first (append them). Returns `[]`
   * once no newer lines are left (a pager not opened at a permalink has none: it starts at the
   * newest line, where the live stream takes over).
   */
  loadLater(options: { signal?: AbortSignal } = {}): Promise<LogLine[]> {
    const run = this.#queue.then(() => this.#loadLater(options.signal));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** The page around the permalink, setting both cursors. */
  async #open(signal: AbortSignal | undefined): Promise<LogLine[]> {
    const page = await fetchHistoryPage(this.#api, this.#jobId, {
      aroundId: this.#aroundId,
      limit: this.#limit,
      signal,
    });
    this.#started = true;
    this.#aroundId = undefined;
    this.#hasMore = page.has_more && page.oldest_id !== null;
    this.#hasNewer = page.has_newer && page.newest_id !== null;
    this.#cursor = page.oldest_id ?? undefined;
    this.#newerCursor = page.newest_id ?? undefined;
    return page.lines;
  }

  async #loadLater(signal: AbortSignal | undefined): Promise<LogLine[]> {
    if (this.#aroundId !== undefined) return this.#open(signal);
    if (!this.#hasNewer || this.#newerCursor === undefined) return [];
    const page = await fetchHistoryPage(this.#api, this.#jobId, {
      afterId: this.#newerCursor,
      limit: this.#limit,
      signal,
    });
    this.#hasNewer = page.has_newer && page.newest_id !== null;
    if (page.newest_id !== null) this.#newerCursor = page.newest_id;
    return page.lines;
  }

  async #loadEarlier(signal: AbortSignal | undefined): Promise<LogLine[]> {
    if (this.#aroundId !== undefined) return this.#open(signal);
    if (!this.#hasMore) return [];
    if (!this.#started) {
      const start = this.#start;
      this.#cursor = typeof start === "function" ? await start() : start;
      this.#started = true;
      this.#start = undefined;
    }
    const page = await fetchHistoryPage(this.#api, this.#jobId, {
      beforeId: this.#cursor,
      limit: this.#limit,
      signal,
    });
    const oldest = page.oldest_id;
    this.#hasMore = page.has_more && oldest !== null;
    if (oldest !== null) this.#cursor = oldest;
    return page.lines;
  }

  /** Iterates the remaining pages, newest first (same paging as {@link loadEarlier}). */
  async *pages(options: { signal?: AbortSignal } = {}): AsyncGenerator<LogLine[], void, undefined> {
    while (this.#hasMore) {
      const lines = await this.loadEarlier(options);
      if (lines.length > 0) yield lines;
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<LogLine[], void, undefined> {
    return this.pages();
  }
}
