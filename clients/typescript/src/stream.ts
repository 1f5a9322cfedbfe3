import { createParser, type EventSourceMessage } from "eventsource-parser";

import {
  BuildlogsError,
  NetworkError,
  ProtocolError,
  errorFromResponse,
  toBuildlogsError,
} from "./errors.js";
import { createApiClient, HistoryPager, type HistoryPagerOptions } from "./history.js";
import { type ConnectionOptions, resolveFetch, sleep, trimBaseUrl } from "./http.js";
import type {
  DoneData,
  FinalStatus,
  HeartbeatData,
  LogLine,
  ResetData,
  StartData,
} from "./types.js";

/** One server event, typed by its SSE event name. Payloads are the generated schema types. */
export type LogStreamEvent =
  | { type: "start"; id: string; data: StartData }
  | { type: "log"; id: string; data: LogLine }
  | { type: "heartbeat"; data: HeartbeatData }
  | { type: "reset"; data: ResetData }
  | { type: "done"; data: DoneData };

/**
 * Connection state. `connecting`: first attempt; `open`: the server accepted the stream;
 * `reconnecting`: waiting for or making another attempt after a failure or a drop;
 * `closed`: finished (done, 204, aborted or a final error).
 */
export type StreamStatus = "connecting" | "open" | "reconnecting" | "closed";

/** How a stream ended. */
export type StreamEnd =
  | { reason: "done"; status: FinalStatus }
  /** 204 on resume: the job finished and nothing was left after the last event id. */
  | { reason: "ended" }
  | { reason: "aborted" }
  /** A final error (401, 404, 400, a protocol error, retries exhausted, or a callback threw). */
  | { reason: "error"; error: unknown };

/** Reconnection timing. Delays use "equal jitter": a random value between half and all of the step. */
export interface BackoffOptions {
  /**
   * First retry delay in ms, doubled per consecutive failure. Default: the server's `retry:` value
   * once one was received (1000-15000 ms by contract), otherwise 1000.
   */
  initialDelayMs?: number;
  /** Cap on a single delay, in ms (default 30000). A `Retry-After` above it still wins. */
  maxDelayMs?: number;
  /** Growth factor per consecutive failure (default 2). */
  factor?: number;
  /** Consecutive failed attempts before giving up (default: never give up). */
  maxRetries?: number;
}

/** Passed to `onError` for every failure. */
export interface StreamErrorInfo {
  /** Whether the client will reconnect (false: the stream is over). */
  willRetry: boolean;
  /** The delay before the next attempt, when `willRetry`. */
  delayMs?: number;
  /** Consecutive failed attempts so far. */
  attempt: number;
}

export interface JobLogEventsOptions extends ConnectionOptions {
  jobId: string;
  /** Resume after this id (a stream id `<ms>-<seq>` from an earlier `log` or `start` event). */
  lastEventId?: string | undefined;
  /** Aborting ends the stream at once (no further callbacks; `finished` resolves `aborted`). */
  signal?: AbortSignal | undefined;
  /**
   * The server's heartbeat interval in ms (its `HEARTBEAT_SECS`, default 20 s). When nothing
   * arrives for {@link livenessTimeoutMs} the connection is deemed dead and replaced.
   */
  heartbeatIntervalMs?: number;
  /** Silence that counts as a dead connection; default 2.5 x `heartbeatIntervalMs`. */
  livenessTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** Connection state changes. */
  onStatusChange?: (status: StreamStatus) => void;
  /**
   * Every failure: transient ones (`willRetry: true`: drops, stalls, 429, 503, 5xx, network) and
   * the final one (`willRetry: false`).
   */
  onError?: (error: BuildlogsError, info: StreamErrorInfo) => void;
}

const DEFAULT_HEARTBEAT_MS = 20_000;
const DEFAULT_INITIAL_DELAY_MS = 1_000;
const DEFAULT_MAX_DELAY_MS = 30_000;
/** The least wait after a 429 or 503 whose Retry-After could not be read. */
const MIN_OVERLOAD_DELAY_MS = 2_000;

class Stalled extends Error {}

function streamUrl(baseUrl: string, jobId: string): string {
  return `${trimBaseUrl(baseUrl)}/api/jobs/${encodeURIComponent(jobId)}/logs/stream`;
}

function parseEvent(message: EventSourceMessage): LogStreamEvent | undefined {
  const type = message.event;
  if (
    type !== "start" &&
    type !== "log" &&
    type !== "heartbeat" &&
    type !== "reset" &&
    type !== "done"
  ) {
    return undefined; // unknown events are ignored, for forward compatibility
  }
  let data: unknown;
  try {
    data = JSON.parse(message.data);
  } catch (cause) {
    throw new ProtocolError(`event "${type}" carries invalid JSON`, { cause });
  }
  if (typeof data !== "object" || data === null) {
    throw new ProtocolError(`event "${type}" carries a non-object payload`);
  }
  switch (type) {
    case "start":
    case "log": {
      const id = message.id ?? (type === "log" ? (data as LogLine).id : undefined);
      if (!id) throw new ProtocolError(`event "${type}" has no id`);
      return type === "start"
        ? { type, id, data: data as StartData }
        : { type, id, data: data as LogLine };
    }
    case "heartbeat":
      return { type, data: data as HeartbeatData };
    case "reset":
      return { type, data: data as ResetData };
    case "done":
      return { type, data: data as DoneData };
  }
}

/** Races one read against the liveness timeout. */
async function readWithin(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  ms: number,
): Promise<ReadableStreamReadResult<Uint8Array>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      reader.read(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Stalled()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Follows a job's log as an async iterator of typed events, reconnecting as needed:
 *
 * - every (re)connect calls `getToken()` for a fresh token;
 * - after a drop, a stall (no byte for `livenessTimeoutMs`) or a close before `done` (as when
 *   the token expires), it resumes with `Last-Event-ID`: no line lost, none repeated;
 * - retries back off exponentially with jitter; 429/503 wait at least `Retry-After`;
 * - it ends after `done` (yielded), on 204 and on abort (returning quietly);
 * - 401, 404, 400 and protocol errors are thrown at once as typed errors, never retried.
 *
 * The generator's return value says how it ended. Breaking out of the loop closes the connection.
 */
export async function* jobLogEvents(
  options: JobLogEventsOptions,
): AsyncGenerator<LogStreamEvent, StreamEnd, undefined> {
  const doFetch = resolveFetch(options);
  const url = streamUrl(options.baseUrl, options.jobId);
  const signal = options.signal;
  const heartbeatMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_MS;
  const livenessMs = options.livenessTimeoutMs ?? Math.round(heartbeatMs * 2.5);
  const backoff = options.backoff ?? {};
  const maxDelay = backoff.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  const factor = backoff.factor ?? 2;
  const maxRetries = backoff.maxRetries ?? Number.POSITIVE_INFINITY;

  let lastEventId = options.lastEventId || undefined;
  let serverRetryMs: number | undefined;
  let failures = 0;
  let status: StreamStatus | undefined;
  const setStatus = (next: StreamStatus) => {
    if (next !== status) {
      status = next;
      options.onStatusChange?.(next);
    }
  };
  const aborted = (): StreamEnd => {
    setStatus("closed");
    return { reason: "aborted" };
  };
  const fail = (error: BuildlogsError): never => {
    setStatus("closed");
    options.onError?.(error, { willRetry: false, attempt: failures });
    throw error;
  };

  setStatus("connecting");
  for (;;) {
    if (signal?.aborted) return aborted();
    const connection = new AbortController();
    const onAbort = () => connection.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let failure: BuildlogsError;
    try {
      let token: string | null;
      try {
        token = (await options.getToken?.()) ?? null;
      } catch (cause) {
        throw new NetworkError("getToken() failed", { cause });
      }
      if (signal?.aborted) return aborted();
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      if (token) headers.Authorization = `Bearer ${token}`;
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;

      // The liveness timeout covers waiting for the response headers too.
      const headersTimer = setTimeout(() => connection.abort(new Stalled()), livenessMs);
      let response: Response;
      try {
        response = await doFetch(url, {
          method: "GET",
          headers,
          signal: connection.signal,
          cache: "no-store",
          ...(options.credentials ? { credentials: options.credentials } : {}),
        });
      } finally {
        clearTimeout(headersTimer);
      }

      if (response.status === 204) {
        setStatus("closed");
        return { reason: "ended" };
      }
      if (!response.ok) {
        const error = await errorFromResponse(response);
        if (!error.retryable) return fail(error);
        throw error;
      }
      const contentType = response.headers.get("Content-Type") ?? "";
      if (!contentType.toLowerCase().startsWith("text/event-stream") || !response.body) {
        await response.body?.cancel().catch(() => undefined);
        return fail(
          new ProtocolError(`expected text/event-stream, got "${contentType}"`, {
            status: response.status,
          }),
        );
      }
      setStatus("open");

      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const pending: EventSourceMessage[] = [];
      const parser = createParser({
        onEvent: (message) => pending.push(message),
        onRetry: (ms) => {
          serverRetryMs = ms;
        },
      });
      try {
        for (;;) {
          const chunk = await readWithin(reader, livenessMs);
          if (chunk.done) break;
          parser.feed(decoder.decode(chunk.value, { stream: true }));
          while (pending.length > 0) {
            const message = pending.shift()!;
            let event: LogStreamEvent | undefined;
            try {
              event = parseEvent(message);
            } catch (error) {
              return fail(toBuildlogsError(error, "bad event"));
            }
            if (!event) continue;
            if (signal?.aborted) return aborted();
            if (event.type === "start" || event.type === "log") lastEventId = event.id;
            failures = 0; // the connection delivered: the next failure starts the backoff anew
            yield event;
            if (event.type === "done") {
              setStatus("closed");
              return { reason: "done", status: event.data.status };
            }
          }
        }
      } finally {
        reader.cancel().catch(() => undefined);
      }
      // A clean close before `done`: token expiry, a server shutdown, a proxy timeout.
      failure = new NetworkError("the stream closed before done");
    } catch (error) {
      if (signal?.aborted) return aborted();
      // Final errors were already reported by fail(): let them out.
      if (error instanceof BuildlogsError && !error.retryable) throw error;
      if (error instanceof Stalled || connection.signal.reason instanceof Stalled) {
        failure = new NetworkError(`no data for ${livenessMs} ms: the connection is presumed dead`);
      } else {
        failure = toBuildlogsError(error, "stream request failed");
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      connection.abort();
    }

    failures += 1;
    if (failures > maxRetries) return fail(failure);
    const base = backoff.initialDelayMs ?? serverRetryMs ?? DEFAULT_INITIAL_DELAY_MS;
    const step = Math.min(maxDelay, base * factor ** (failures - 1));
    let delay = step / 2 + (Math.random() * step) / 2;
    const retryAfter =
      failure.retryAfterMs ??
      // A cross-origin browser cannot read Retry-After unless the server exposes it: wait a while anyway.
      (failure.kind === "too_many_requests" || failure.kind === "unavailable" ? MIN_OVERLOAD_DELAY_MS : undefined);
    if (retryAfter !== undefined) {
      delay = Math.max(delay, retryAfter * (1 + Math.random() * 0.2));
    }
    delay = Math.round(delay);
    setStatus("reconnecting");
    options.onError?.(failure, { willRetry: true, delayMs: delay, attempt: failures });
    if (!(await sleep(delay, signal))) return aborted();
  }
}

/** Typed callbacks for {@link streamJobLogs}. */
export interface StreamCallbacks {
  /** Each (re)connect's `start` event; `id` is the position the stream resumes after. */
  onStart?: (data: StartData, id: string) => void;
  /** Each line, in order, exactly once across reconnects. */
  onLog?: (line: LogLine) => void;
  /**
   * Lines after the resume point may have been trimmed away: every retained line follows.
   * Reload the view from history if completeness matters.
   */
  onReset?: (data: ResetData) => void;
  /** The job is terminal (`ready` or `failed`) and every line was delivered. The stream ends. */
  onDone?: (data: DoneData) => void;
  onHeartbeat?: (data: HeartbeatData) => void;
}

export type StreamJobLogsOptions = JobLogEventsOptions & StreamCallbacks;

/** A running stream, returned by {@link streamJobLogs}. */
export interface LogStream {
  /** Resolves (never rejects) when the stream is over, saying why. */
  readonly finished: Promise<StreamEnd>;
  /**
   * The first `start` event's data. Rejects if the stream ends before any `start` (e.g. a 404).
   */
  readonly started: Promise<StartData>;
  /** Stops the stream (same as aborting the signal). */
  close(): void;
  /** The id the stream would resume after now. */
  readonly lastEventId: string | undefined;
  /** The first `start` event's `history_cursor`, once it arrived. */
  readonly historyCursor: string | undefined;
  readonly status: StreamStatus;
  /**
   * A "Load earlier" pager for the history above this stream: it waits for the first `start`
   * event and pages from its `history_cursor`, so history and live lines meet with no gap and no
   * duplicate.
   */
  historyPager(options?: Omit<HistoryPagerOptions, "beforeId">): HistoryPager;
}

/**
 * Follows a job's log with typed callbacks; see {@link jobLogEvents} for the reconnection rules.
 * Returns at once; `finished` says when and how it ended.
 */
export function streamJobLogs(options: StreamJobLogsOptions): LogStream {
  const controller = new AbortController();
  const external = options.signal;
  if (external?.aborted) controller.abort(external.reason);
  else external?.addEventListener("abort", () => controller.abort(external.reason), { once: true });

  let lastEventId = options.lastEventId || undefined;
  let historyCursor: string | undefined;
  let status: StreamStatus = "connecting";
  let resolveStarted!: (data: StartData) => void;
  let rejectStarted!: (reason: unknown) => void;
  const started = new Promise<StartData>((resolve, reject) => {
    resolveStarted = resolve;
    rejectStarted = reject;
  });
  started.catch(() => undefined); // nobody has to listen

  const events = jobLogEvents({
    ...options,
    lastEventId,
    signal: controller.signal,
    onStatusChange: (next) => {
      status = next;
      options.onStatusChange?.(next);
    },
  });

  const finished = (async (): Promise<StreamEnd> => {
    let end: StreamEnd;
    try {
      for (;;) {
        const next = await events.next();
        if (next.done) {
          end = next.value;
          break;
        }
        if (controller.signal.aborted) {
          await events.return({ reason: "aborted" });
          end = { reason: "aborted" };
          break;
        }
        const event = next.value;
        switch (event.type) {
          case "start":
            lastEventId = event.id;
            if (historyCursor === undefined) {
              historyCursor = event.data.history_cursor;
              resolveStarted(event.data);
            }
            options.onStart?.(event.data, event.id);
            break;
          case "log":
            lastEventId = event.id;
            options.onLog?.(event.data);
            break;
          case "heartbeat":
            options.onHeartbeat?.(event.data);
            break;
          case "reset":
            options.onReset?.(event.data);
            break;
          case "done":
            options.onDone?.(event.data);
            break;
        }
      }
    } catch (error) {
      // jobLogEvents already reported its own errors through onError; a callback's error was not.
      if (!(error instanceof BuildlogsError)) {
        await events.return({ reason: "error", error }).catch(() => undefined);
      }
      status = "closed";
      end = { reason: "error", error };
    }
    rejectStarted(
      end.reason === "error" ? end.error : new Error(`the stream ended (${end.reason}) before start`),
    );
    return end;
  })();

  return {
    finished,
    started,
    close: () => controller.abort(),
    get lastEventId() {
      return lastEventId;
    },
    get historyCursor() {
      return historyCursor;
    },
    get status() {
      return status;
    },
    historyPager(pagerOptions = {}) {
      return new HistoryPager(createApiClient(options), options.jobId, {
        ...pagerOptions,
        beforeId: () => started.then((data) => data.history_cursor),
      });
    },
  };
}
