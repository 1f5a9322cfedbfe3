export { type BuildlogsClient, createBuildlogsClient } from "./client.js";
export {
  BadRequestError,
  BuildlogsError,
  type BuildlogsErrorInit,
  type BuildlogsErrorKind,
  isProblem,
  NetworkError,
  NotFoundError,
  parseRetryAfter,
  ProtocolError,
  ServerError,
  ServiceUnavailableError,
  TooManyRequestsError,
  UnauthorizedError,
} from "./errors.js";
export {
  type ApiClient,
  createApiClient,
  fetchHistoryPage,
  type HistoryPageOptions,
  HistoryPager,
  type HistoryPagerOptions,
  historyPages,
} from "./history.js";
export { type DownloadOptions, downloadLog, type LogDownload } from "./download.js";
export type { ConnectionOptions } from "./http.js";
export { compareStreamIds, nextStreamId } from "./ids.js";
export { fetchSearchPage, type SearchOptions, searchLog } from "./search.js";
export {
  type BackoffOptions,
  type JobLogEventsOptions,
  jobLogEvents,
  type LogStream,
  type LogStreamEvent,
  type StreamCallbacks,
  type StreamEnd,
  type StreamErrorInfo,
  streamJobLogs,
  type StreamJobLogsOptions,
  type StreamStatus,
} from "./stream.js";
export type {
  components,
  DoneData,
  ErrorCode,
  FinalStatus,
  HeartbeatData,
  HistoryPage,
  LogLine,
  operations,
  paths,
  Problem,
  ResetData,
  ResetReason,
  RetryData,
  SearchPage,
  StartData,
} from "./types.js";
