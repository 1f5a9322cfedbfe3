/**
 * @buildlogs/react: `useJobLogs` (a job's live log and history as React state, batched per
 * frame, shared per job) and `<BuildLog>` (a virtualised viewer with ANSI colours, follow mode,
 * "Load earlier", permalinks, search and download), and `useLogSearch` (find in the whole
 * log). Importing this module touches no browser global (SSR-safe).
 */
export { BuildLog, type BuildLogProps } from "./BuildLog.js";
export { parseAnsi, type Segment } from "./ansi.js";
export {
  type AroundResult,
  type AroundState,
  type ConnectionStatus,
  DEFAULT_MAX_LINES,
  DEFAULT_PAGE_SIZE,
  type JobLogsCallbacks,
  type JobLogsState,
} from "./feed.js";
export type { LogLines } from "./lines.js";
export { useJobLogs, type UseJobLogsOptions, type UseJobLogsResult } from "./useJobLogs.js";
export {
  type ConnectionProps,
  type LogSearch,
  type LogSearchState,
  useBuildlogsClient,
  useLogSearch,
  type UseLogSearchOptions,
} from "./useLogSearch.js";
