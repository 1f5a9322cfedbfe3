import { errorFromResponse, toBuildlogsError } from "./errors.js";
import type { ApiClient } from "./history.js";
import type { LogLine, SearchPage } from "./types.js";

export interface SearchOptions {
  /** `q` is a pattern in the syntax of Rust's `regex` crate (default: a literal). */
  regex?: boolean | undefined;
  /** Letter case must match (default: it need not). */
  caseSensitive?: boolean | undefined;
  /** Exclusive: start after this line id (default: the first retained line). */
  afterId?: string | undefined;
  /** Matches per page, 1-500 (server default 100). */
  limit?: number | undefined;
  /** Aborts the request in flight (and the iteration) with the signal's reason. */
  signal?: AbortSignal | undefined;
}

/**
 * Fetches one page of matches of `query` in a job's log: lines whose text, without its ANSI
 * escape sequences, contains it. Throws a typed {@link BuildlogsError} (`BadRequestError` with
 * code `invalid_query` for a missing, too long or bad pattern). No retries.
 */
export async function fetchSearchPage(
  api: ApiClient,
  jobId: string,
  query: string,
  options: SearchOptions = {},
): Promise<SearchPage> {
  const params: { q: string; regex?: boolean; case_sensitive?: boolean; after_id?: string; limit?: number } = {
    q: query,
  };
  if (options.regex !== undefined) params.regex = options.regex;
  if (options.caseSensitive !== undefined) params.case_sensitive = options.caseSensitive;
  if (options.afterId !== undefined) params.after_id = options.afterId;
  if (options.limit !== undefined) params.limit = options.limit;
  let result;
  try {
    result = await api.GET("/api/jobs/{job_id}/logs/search", {
      params: { path: { job_id: jobId }, query: params },
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw toBuildlogsError(error, "search request failed");
  }
  if (result.error !== undefined || !result.response.ok || result.data === undefined) {
    throw await errorFromResponse(result.response, result.error ?? null);
  }
  return { ...result.data, scanned_to: result.data.scanned_to ?? null };
}

/**
 * Every line of a job's log that matches `query`, oldest first, across as many pages as it
 * takes (each page scans at most 100,000 lines, so a long log takes several): each match
 * exactly once. Stop early with `break`, or with `options.signal` (the iteration then throws
 * the signal's reason).
 */
export async function* searchLog(
  api: ApiClient,
  jobId: string,
  query: string,
  options: SearchOptions = {},
): AsyncGenerator<LogLine, void, undefined> {
  let afterId = options.afterId;
  for (;;) {
    options.signal?.throwIfAborted();
    const page = await fetchSearchPage(api, jobId, query, { ...options, afterId });
    for (const line of page.matches) {
      options.signal?.throwIfAborted();
      yield line;
    }
    if (!page.has_more || page.scanned_to === null) return;
    afterId = page.scanned_to;
  }
}
