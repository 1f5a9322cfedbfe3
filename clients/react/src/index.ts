/**
 * @buildlogs/react: `useJobLogs` (a job's live log and history as React state, batched per
 * frame, shared per job) and `<BuildLog>` (a virtualised viewer with ANSI colours, follow mode and
 * "Load earlier"). Importing this module touches no browser global (SSR-safe).
 */
export { BuildLog, type BuildLogProps } from "./BuildLog.js";
export { parseAnsi, type Segment } from "./ansi.js";
export {
  type ConnectionStatus,
  DEFAULT_MAX_LINES,
  DEFAULT_PAGE_SIZE,
  type JobLogsCallbacks,
  type JobLogsState,
} from "./feed.js";
export type { LogLines } from "./lines.js";
export { useJobLogs, type UseJobLogsOptions, type UseJobLogsResult } from "./useJobLogs.js";
