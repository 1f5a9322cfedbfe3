import {
  type ApiClient,
  createApiClient,
  fetchHistoryPage,
  type HistoryPageOptions,
  HistoryPager,
  type HistoryPagerOptions,
  historyPages,
} from "./history.js";
import type { ConnectionOptions } from "./http.js";
import {
  type JobLogEventsOptions,
  jobLogEvents,
  type LogStream,
  type LogStreamEvent,
  type StreamEnd,
  streamJobLogs,
  type StreamJobLogsOptions,
} from "./stream.js";
import type { HistoryPage } from "./types.js";

type PerJob<T> = Omit<T, keyof ConnectionOptions | "jobId">;

/** The buildlogs API for one server and one way of authenticating. */
export interface BuildlogsClient {
  /** The typed openapi-fetch client (auth included), for anything not wrapped here. */
  readonly api: ApiClient;
  /** One page of history (typed errors, no retries). */
  getHistoryPage(jobId: string, options?: HistoryPageOptions): Promise<HistoryPage>;
  /** Every page older than `beforeId` (or all of them), newest page first. */
  historyPages(jobId: string, options?: HistoryPageOptions): AsyncGenerator<HistoryPage, void, undefined>;
  /** A "Load earlier" pager starting at `beforeId` (or at the newest line). */
  historyPager(jobId: string, options?: HistoryPagerOptions): HistoryPager;
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
    streamJobLogs: (jobId, streamOptions) => streamJobLogs({ ...streamOptions, ...connection, jobId }),
    jobLogEvents: (jobId, streamOptions) => jobLogEvents({ ...streamOptions, ...connection, jobId }),
  };
}
