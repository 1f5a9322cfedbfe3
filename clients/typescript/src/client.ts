import {
  type ApiClient,
  createApiClient,
  fetchHistoryPage,
  type HistoryPageOptions,
  HistoryPager,
  type HistoryPagerOptions,
  historyPages,
} from "./history.js";
import { type DownloadOptions, downloadLog, type LogDownload } from "./download.js";
import type { ConnectionOptions } from "./http.js";
import { fetchSearchPage, type SearchOptions, searchLog } from "./search.js";
import {
  type JobLogEventsOptions,
  jobLogEvents,
  type LogStream,
  type LogStreamEvent,
  type StreamEnd,
  streamJobLogs,
  type StreamJobLogsOptions,
} from "./stream.js";
import type { HistoryPage, LogLine, SearchPage } from "./types.js";

type PerJob<T> = Omit<T, keyof ConnectionOptions | "jobId">;

/** The buildlogs API for one server and one way of authenticating. */
export interface BuildlogsClient {
  /** The typed openapi-fetch client (auth included), for anything not wrapped here. */
  readonly api: ApiClient;
  /** One page of history (typed errors, no retries). */
  getHistoryPage(jobId: string, options?: HistoryPageOptions): Promise<HistoryPage>;
  /**
   * Every page older than `beforeId` (or all of them), newest page first; with `afterId`, every
   * page newer than it, oldest page first.
   */
  historyPages(jobId: string, options?: HistoryPageOptions): AsyncGenerator<HistoryPage, void, undefined>;
  /**
   * A "Load earlier" pager starting at `beforeId` (or at the newest line), or a two-way pager
   * opened at a line's permalink (`aroundId`).
   */
  historyPager(jobId: string, options?: HistoryPagerOptions): HistoryPager;
  /** Every line matching `query` (ANSI codes ignored), oldest first, across pages. */
  searchLog(jobId: string, query: string, options?: SearchOptions): AsyncGenerator<LogLine, void, undefined>;
  /** One page of search matches (typed errors, no retries). */
  getSearchPage(jobId: string, query: string, options?: SearchOptions): Promise<SearchPage>;
  /** The whole log as text, as a stream or a Blob, authenticated with `getToken`. */
  downloadLog(jobId: string, options?: DownloadOptions): Promise<LogDownload>;
  /** Follows a job's log with callbacks. */
  streamJobLogs(jobId: string, options?: PerJob<StreamJobLogsOptions>): LogStream;
  /** Follows a job's log as an async iterator. */
  jobLogEvents(
    jobId: string,
    options?: PerJob<JobLogEventsOptions>,
  ): AsyncGenerator<LogStreamEvent, StreamEnd, undefined>;
}

/**
 * Creates a client. `getToken` is called before every request and every stream (re)connect:
 * with Clerk, pass `useAuth().getToken` (React) or `() => clerk.session?.getToken() ?? null`.
 */
export function createBuildlogsClient(options: ConnectionOptions): BuildlogsClient {
  const connection: ConnectionOptions = { ...options };
  const api = createApiClient(connection);
  return {
    api,
    getHistoryPage: (jobId, pageOptions) => fetchHistoryPage(api, jobId, pageOptions),
    historyPages: (jobId, pageOptions) => historyPages(api, jobId, pageOptions),
    historyPager: (jobId, pagerOptions) => new HistoryPager(api, jobId, pagerOptions),
    searchLog: (jobId, query, searchOptions) => searchLog(api, jobId, query, searchOptions),
    getSearchPage: (jobId, query, searchOptions) => fetchSearchPage(api, jobId, query, searchOptions),
    downloadLog: (jobId, downloadOptions) => downloadLog(api, jobId, downloadOptions),
    streamJobLogs: (jobId, streamOptions) => streamJobLogs({ ...streamOptions, ...connection, jobId }),
    jobLogEvents: (jobId, streamOptions) => jobLogEvents({ ...streamOptions, ...connection, jobId }),
  };
}
