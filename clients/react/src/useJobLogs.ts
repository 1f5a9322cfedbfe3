/**
 * `useJobLogs(jobId, options)`: a job's live log and its history, for React.
 *
 * The hook reads a shared, reference-counted {@link Feed} through `useSyncExternalStore`: the
 * subscription opens the stream (never the render), every component watching the same job on the
 * same server shares one connection, and the component re-renders at most once per animation
 * frame however fast lines come. On the server (SSR) it renders the `connecting` state and opens
 * nothing.
 */
import type { BuildlogsClient } from "@buildlogs/client";
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";

import {
  type AroundResult,
  CONNECTING_STATE,
  DEFAULT_MAX_LINES,
  DEFAULT_PAGE_SIZE,
  type FeedSource,
  feedKey,
  IDLE_STATE,
  type JobLogsCallbacks,
  type JobLogsState,
  obtainFeed,
  peekFeed,
  type Subscriber,
} from "./feed.js";

export interface UseJobLogsOptions extends JobLogsCallbacks {
  /**
   * The server's origin, e.g. `https://logs.example.com` (`""`: the page's own origin). Ignored
   * when `client` is given.
   */
  baseUrl?: string;
  /**
   * Returns the Clerk session token (`useAuth().getToken` as is), or `null` to send none. The
   * latest function is always used: a new identity on each render does not reconnect.
   */
  getToken?: () => Promise<string | null> | string | null;
  /** A client of your own (from `createBuildlogsClient`), instead of `baseUrl` and `getToken`. */
  client?: BuildlogsClient;
  /** `credentials` for every request (e.g. `"include"` for the `__session` cookie cross-site). */
  credentials?: RequestInit["credentials"];
  /** A `fetch` to use instead of the global one (with `baseUrl`). */
  fetch?: typeof fetch;
  /**
   * Lines held at most (default 50,000): past it the oldest go, and "Load earlier" brings them
   * back. Components sharing a job share the largest of their windows.
   */
  maxLines?: number;
  /** Lines per "Load earlier" page, 1-500 (default 500). */
  pageSize?: number;
  /** Load one page of history when the stream starts, so the view opens on the latest lines (default true). */
  initialHistory?: boolean;
  /** The server's heartbeat interval (its `HEARTBEAT_SECS`) in ms, for the liveness check. */
  heartbeatIntervalMs?: number;
  /**
   * Open the job at this line (a permalink's id) instead of at its latest lines: the page
   * around it (`openAround`), then "Load earlier" and "Load later" from there. Read when the
   * job opens.
   */
  initialLineId?: string | null;
}

export interface UseJobLogsResult extends JobLogsState {
  /** Loads the page above the oldest line held (rejects on failure; `earlierError` says it too). */
  loadEarlier(): Promise<void>;
  /** After a final error (`error`), connects again, resuming after the last line received. */
  retry(): void;
  /** Back to the live tail when "Load earlier" on a full window let the newest lines go. */
  jumpToLatest(): Promise<void>;
  /**
   * Opens the view at line `id` (a permalink, a search match): the page around it replaces the
   * lines held, and `hasLater` is true until `loadLater` reaches the live tail again. Resolves
   * to whether the line itself is there (else: where it would stand) and its index in `lines`.
   * Rejects on failure (and the view goes back to the latest lines); `around.error` says it too.
   */
  openAround(id: string): Promise<AroundResult>;
  /** Loads the page below the newest line held, joining the live tail when it reaches it. */
  loadLater(): Promise<void>;
}

const noop = () => undefined;
const resolved = () => Promise.resolve();

/**
 * Follows `jobId`'s log: `lines` (a window of at most `maxLines`, oldest first, read with
 * `lines.at(i)`), the connection `status`, the job's `final` status, a final `error`, a `reset`
 * notice, and "Load earlier". `jobId` null or empty: nothing is opened (`status: "idle"`).
 */
export function useJobLogs(jobId: string | null | undefined, options: UseJobLogsOptions = {}): UseJobLogsResult {
  const { client, baseUrl = "", credentials } = options;
  const source: FeedSource = useMemo(
    () => (client ? { client } : { baseUrl, ...(credentials ? { credentials } : {}) }),
    [client, baseUrl, credentials],
  );
  const key = jobId ? feedKey(source, jobId) : undefined;

  const optionsRef = useRef(options);
  useLayoutEffect(() => {
    optionsRef.current = options;
    subscriber.maxLines = options.maxLines ?? DEFAULT_MAX_LINES;
  });
  // The subscriber stands for this hook in the shared feed; it always reads the latest options.
  const [subscriber] = useState<Subscriber>(() => {
    const latest = (): UseJobLogsOptions => optionsRef.current;
    return {
      maxLines: DEFAULT_MAX_LINES,
      getToken: () => latest().getToken?.() ?? null,
      callbacks: {
        onLine: (line) => latest().onLine?.(line),
        onStart: (data) => latest().onStart?.(data),
        onReset: (data) => latest().onReset?.(data),
        onDone: (data) => latest().onDone?.(data),
        onError: (error, info) => latest().onError?.(error, info),
        onStatusChange: (status) => latest().onStatusChange?.(status),
      },
    };
  });

  const subscribe = useCallback(
    (notify: () => void) => {
      if (!key || !jobId) return noop;
      subscriber.maxLines = optionsRef.current.maxLines ?? DEFAULT_MAX_LINES;
      const o = optionsRef.current;
      const feed = obtainFeed(key, jobId, "client" in source ? source : { ...source, ...(o.fetch ? { fetch: o.fetch } : {}) }, {
        pageSize: o.pageSize ?? DEFAULT_PAGE_SIZE,
        initialHistory: o.initialHistory ?? true,
        heartbeatIntervalMs: o.heartbeatIntervalMs,
      });
      return feed.subscribe(subscriber, notify);
    },
    [key, jobId, source, subscriber],
  );
  const getSnapshot = useCallback(
    () => (key ? (peekFeed(key)?.state ?? CONNECTING_STATE) : IDLE_STATE),
    [key],
  );
  const getServerSnapshot = useCallback(() => (key ? CONNECTING_STATE : IDLE_STATE), [key]);
  const state = useSyncExternalStore(subscribe, getSnapshot, getServerSnapshot);

  const actions = useMemo(
    () => ({
      loadEarlier: () => (key ? (peekFeed(key)?.loadEarlier() ?? Promise.resolve()) : Promise.resolve()),
      retry: () => (key ? peekFeed(key)?.retry() : undefined),
      jumpToLatest: () => (key ? (peekFeed(key)?.jumpToLatest() ?? Promise.resolve()) : resolved()),
      openAround: (id: string): Promise<AroundResult> => {
        const feed = key ? peekFeed(key) : undefined;
        return feed ? feed.openAround(id) : Promise.resolve({ found: false, index: 0 });
      },
      loadLater: () => (key ? (peekFeed(key)?.loadLater() ?? Promise.resolve()) : resolved()),
    }),
    [key],
  );

  // The permalink the job opens at: once per job (StrictMode's second run shares the first's
  // request). Runs after the subscription above, so the feed exists.
  const initialLineId = options.initialLineId;
  useEffect(() => {
    if (!key || !initialLineId) return;
    void peekFeed(key)
      ?.openAround(initialLineId)
      .catch(() => undefined);
  }, [key, initialLineId]);
  return useMemo(() => ({ ...state, ...actions }), [state, actions]);
}
