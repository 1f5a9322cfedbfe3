import { createParser, type EventSourceMessage, type EventSourceParser } from "eventsource-parser";

import {
  BuildlogsError,
  NetworkError,
  ProtocolError,
  errorFromResponse,
  toBuildlogsError,
} from "./errors.js";
import { createApiClient, HistoryPager, type HistoryPagerOptions } from "./history.js";
import { type ConnectionOptions, resolveFetch, sleep, trimBaseUrl } from "./http.js";
import { compareStreamIds, nextStreamId } from "./ids.js";
import { type TokenExpiry, tokenExpiry } from "./token.js";
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
 * Connection state. `connecting`: first attempt; `open`: the server accepted the stream (and
 * stays so while the client moves to a fresh token, see `renewBeforeExpiryMs`: that is not a
 * reconnect anyone needs to see); `reconnecting`: waiting for or making another attempt after a
 * failure or a drop; `closed`: finished (done, 204, aborted or a final error).
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
  /**
   * The server ends a stream when its token expires. This long (ms) before the token's `exp` (read
   * from the JWT, not verified), the client asks `getToken()` for a token that expires later, opens
   * the next connection with it and `Last-Event-ID`, and once that one has answered with `start`,
   * switches over and closes the old one: no line lost or repeated, no gap, no error, and the
   * status stays `open`. While `getToken()` still returns a token that expires no later, it asks
   * again every quarter of this margin (at least 250 ms, at most 1 s).
   *
   * Default: a quarter of the token's lifetime (`exp - iat`), at most 5000 ms; for Clerk's 60 s
   * session tokens that is 5 s before `exp`, well inside the 15 s in which Clerk's `getToken()`
   * hands out a new token, and before the server's leeway (5 s by default) runs out.
   *
   * `false`: never renew early. Tokens that are not JWTs or carry no `exp` are never renewed
   * early either. Either way, a stream that ends because its token expired is resumed at once
   * with a fresh token, without `onError`, backoff or a status change.
   */
  renewBeforeExpiryMs?: number | false;
  /** Connection state changes. */
  onStatusChange?: (status: StreamStatus) => void;
  /**
   * Every failure: transient ones (`willRetry: true`: drops, stalls, 429, 503, 5xx, network) and
   * the final one (`willRetry: false`). A token expiring is not a failure and is not reported.
   */
  onError?: (error: BuildlogsError, info: StreamErrorInfo) => void;
}

const DEFAULT_HEARTBEAT_MS = 20_000;
const DEFAULT_INITIAL_DELAY_MS = 1_000;
const DEFAULT_MAX_DELAY_MS = 30_000;
/** The least wait after a 429 or 503 whose Retry-After could not be read. */
const MIN_OVERLOAD_DELAY_MS = 2_000;
/** Default renewal margin: this share of the token's lifetime... */
const RENEW_FRACTION = 0.25;
/** ...but never more than this before `exp`. */
const MAX_RENEW_MARGIN_MS = 5_000;
/** Bounds on the wait between renewal attempts while `getToken()` has nothing newer. */
const MIN_RENEW_RETRY_MS = 250;
const MAX_RENEW_RETRY_MS = 1_000;
/** A connection is not replaced sooner than this after it opened (or half its token's time left). */
const MIN_CONNECTION_MS = 1_000;
/** Past `exp` by this much and the server has still not ended the stream: stop trying to renew. */
const RENEW_GIVE_UP_MS = 60_000;
/**
 * A `retry:` of at most this many ms after `start` announces the end of the stream because its
 * token expired (the contract's first `retry:` is 1000-15000 ms; the expiry one at most 500).
 */
const EXPIRY_RETRY_MAX_MS = 500;
/** The wait before asking `getToken()` again after an expiry cut, when no short `retry:` came. */
const DEFAULT_EXPIRY_RETRY_MS = 250;
/** A clean end this close to the token's `exp` (client clock) counts as the expiry cut. */
const EXPIRY_CLOCK_SLACK_MS = 1_000;
/** After an expiry cut, how often to ask `getToken()` again while it returns the expired token. */
const STALE_TOKEN_RETRIES = 3;

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
    case "reset": {
      const reset = data as ResetData;
      return { type, data: { ...reset, oldest_id: reset.oldest_id ?? null } };
    }
    case "done":
      return { type, data: data as DoneData };
  }
}

type Pulled =
  | { kind: "message"; message: EventSourceMessage }
  | { kind: "end" }
  /** {@link Connection.interrupt} was called while waiting for data. */
  | { kind: "interrupted" };

const INTERRUPTED = Symbol("interrupted");

/**
 * One stream request and its response body, read on demand (so a slow consumer slows the reads).
 * Aborting the caller's signal closes it.
 */
class Connection {
  readonly controller = new AbortController();
  readonly openedAt = Date.now();
  readonly expiry: TokenExpiry | undefined;
  /** The short `retry:` sent after `start`: the server ends the stream next, its token expired. */
  expiryRetryMs: number | undefined;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #parser: EventSourceParser | undefined;
  #livenessMs = 0;
  readonly #decoder = new TextDecoder();
  readonly #pending: EventSourceMessage[] = [];
  /** A read that an interrupt left pending: the next wait takes it up, so no chunk is lost. */
  #read: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
  #wake: (() => void) | undefined;
  #started = false;
  #ended = false;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => this.close();

  constructor(
    /** The token sent (`null`: none). */
    readonly token: string | null,
    /** The `Last-Event-ID` sent. */
    readonly lastEventId: string | undefined,
    signal: AbortSignal | undefined,
  ) {
    this.expiry = tokenExpiry(token);
    this.#signal = signal;
    signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Starts reading `body`; `onRetry` hears every `retry:` other than the expiry one. */
  attach(body: ReadableStream<Uint8Array>, livenessMs: number, onRetry: (ms: number) => void): void {
    this.#reader = body.getReader();
    this.#livenessMs = livenessMs;
    this.#parser = createParser({
      onEvent: (message) => {
        if (message.event === "start") this.#started = true;
        this.#pending.push(message);
      },
      onRetry: (ms) => {
        if (this.#started && ms <= EXPIRY_RETRY_MAX_MS) this.expiryRetryMs = ms;
        else onRetry(ms);
      },
    });
  }

  /**
   * The next message, or the end of the body. Throws on a broken connection, or one silent for
   * the liveness timeout.
   */
  async next(): Promise<Pulled> {
    for (;;) {
      const message = this.#pending.shift();
      if (message) return { kind: "message", message };
      if (this.#ended || !this.#reader) return { kind: "end" };
      const read = (this.#read ??= this.#reader.read());
      const chunk = await this.#waitFor(read);
      if (chunk === INTERRUPTED) return { kind: "interrupted" };
      this.#read = undefined;
      if (chunk.done) this.#ended = true;
      else this.#parser!.feed(this.#decoder.decode(chunk.value, { stream: true }));
    }
  }

  /** Makes a `next()` that is waiting for data return `interrupted` now. */
  interrupt(): void {
    this.#wake?.();
  }

  #waitFor<T>(read: Promise<T>): Promise<T | typeof INTERRUPTED> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    return new Promise<T | typeof INTERRUPTED>((resolve, reject) => {
      timer = setTimeout(() => reject(new Stalled()), this.#livenessMs);
      this.#wake = () => resolve(INTERRUPTED);
      read.then(resolve, reject);
    }).finally(() => {
      clearTimeout(timer);
      this.#wake = undefined;
    });
  }

  close(): void {
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.controller.abort();
    this.#reader?.cancel().catch(() => undefined);
  }
}

/** A fresh connection that has answered with `start`, ready to take over. */
interface Renewed {
  kind: "renewed";
  connection: Connection;
  start: Extract<LogStreamEvent, { type: "start" }>;
}

/** Renewal of one connection before its token expires. */
interface Renewal {
  /** Set once a fresh connection has sent `start` (the connection renewed is interrupted then). */
  readonly result: Renewed | undefined;
  /** The caller takes the fresh connection: `dispose` leaves it open. */
  adopt(): void;
  /** Stops renewing; closes a fresh connection nobody adopted. */
  dispose(): void;
}

/**
 * Follows a job's log as an async iterator of typed events, reconnecting as needed:
 *
 * - every (re)connect calls `getToken()` for a fresh token;
 * - shortly before the token expires, it moves to a connection with a fresh token (see
 *   `renewBeforeExpiryMs`); if the server ends the stream on expiry anyway, it resumes at once
 *   with a fresh token: neither is an error;
 * - after a drop, a stall (no byte for `livenessTimeoutMs`) or another close before `done` (as at
 *   a server shutdown), it resumes with `Last-Event-ID`: no line lost, none repeated;
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
  const renewMargin = options.renewBeforeExpiryMs;

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
  const reported = new WeakSet<BuildlogsError>();
  const fail = (error: BuildlogsError): never => {
    setStatus("closed");
    reported.add(error);
    options.onError?.(error, { willRetry: false, attempt: failures });
    throw error;
  };
  const getToken = async (): Promise<string | null> => {
    try {
      return (await options.getToken?.()) ?? null;
    } catch (cause) {
      throw new NetworkError("getToken() failed", { cause });
    }
  };

  /**
   * Sends the stream request of `connection` and attaches its body. False on 204 (nothing left
   * after the `Last-Event-ID` of a finished job); throws a typed error for any other answer.
   */
  const open = async (connection: Connection): Promise<boolean> => {
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    if (connection.token) headers.Authorization = `Bearer ${connection.token}`;
    if (connection.lastEventId) headers["Last-Event-ID"] = connection.lastEventId;
    // The liveness timeout covers waiting for the response headers too.
    const headersTimer = setTimeout(() => connection.controller.abort(new Stalled()), livenessMs);
    let response: Response;
    try {
      response = await doFetch(url, {
        method: "GET",
        headers,
        signal: connection.controller.signal,
        cache: "no-store",
        ...(options.credentials ? { credentials: options.credentials } : {}),
      });
    } catch (error) {
      if (connection.controller.signal.reason instanceof Stalled) throw new Stalled();
      throw error;
    } finally {
      clearTimeout(headersTimer);
    }
    if (response.status === 204) return false;
    if (!response.ok) throw await errorFromResponse(response);
    const contentType = response.headers.get("Content-Type") ?? "";
    if (!contentType.toLowerCase().startsWith("text/event-stream") || !response.body) {
      await response.body?.cancel().catch(() => undefined);
      throw new ProtocolError(`expected text/event-stream, got "${contentType}"`, {
        status: response.status,
      });
    }
    connection.attach(response.body, livenessMs, (ms) => {
      serverRetryMs = ms;
    });
    return true;
  };

  /**
   * Moves to a fresh token before `current`'s expires: from shortly before `exp`, asks
   * `getToken()` for a token that expires later (again and again, spaced, while there is none),
   * opens a connection with it and the last delivered id, and hands it over once it sent `start`.
   * Failures here are not reported: the current connection goes on, and if the server ends it,
   * the reconnect meets (and reports) whatever is really wrong.
   */
  const renew = (current: Connection): Renewal | undefined => {
    const expiry = current.expiry;
    if (renewMargin === false || !expiry) return undefined;
    const left = expiry.expiresAt - current.openedAt;
    const margin = Math.max(
      0,
      renewMargin ?? Math.min(MAX_RENEW_MARGIN_MS, (expiry.lifetimeMs ?? left) * RENEW_FRACTION),
    );
    const retryMs = Math.min(MAX_RENEW_RETRY_MS, Math.max(MIN_RENEW_RETRY_MS, margin / 4));
    const giveUpAt = expiry.expiresAt + RENEW_GIVE_UP_MS;
    let disposed = false;
    let adopted = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let fresh: Connection | undefined;
    let result: Renewed | undefined;
    const schedule = (ms: number) => {
      if (disposed || Date.now() + ms > giveUpAt) return;
      timer = setTimeout(() => void attempt(), Math.max(0, ms));
    };
    const attempt = async (): Promise<void> => {
      timer = undefined;
      let token: string | null;
      try {
        token = await getToken();
      } catch {
        return schedule(retryMs);
      }
      if (disposed) return;
      const later = tokenExpiry(token);
      if (!later || later.expiresAt <= expiry.expiresAt) return schedule(retryMs);
      const after = lastEventId;
      if (after === undefined) return schedule(retryMs); // no position yet: resuming could skip lines
      const connection = new Connection(token, after, signal);
      fresh = connection;
      try {
        if (!(await open(connection))) {
          // 204: the job is over and nothing is left after `after`; `done` is on its way.
          connection.close();
          return;
        }
        for (;;) {
          const pulled = await connection.next();
          if (disposed) return;
          if (pulled.kind === "end") throw new NetworkError("the stream closed before start");
          if (pulled.kind === "interrupted") continue; // (nobody interrupts this one)
          const event = parseEvent(pulled.message);
          if (!event) continue;
          if (event.type !== "start") throw new ProtocolError(`expected start, got "${event.type}"`);
          result = { kind: "renewed", connection, start: event };
          current.interrupt();
          return;
        }
      } catch (error) {
        connection.close();
        if (disposed) return;
        const failure = error instanceof Stalled ? new NetworkError("no answer") : toBuildlogsError(error, "renewal failed");
        // A final answer to a fresh token (401, 404, ...) is left for the reconnect to report.
        if (failure.retryable) schedule(Math.max(retryMs, failure.retryAfterMs ?? 0));
      }
    };
    const earliest = current.openedAt + Math.min(MIN_CONNECTION_MS, left / 2);
    schedule(Math.max(expiry.expiresAt - margin, earliest) - Date.now());
    return {
      get result() {
        return result;
      },
      adopt: () => {
        adopted = true;
      },
      dispose: () => {
        disposed = true;
        clearTimeout(timer);
        if (!adopted) fresh?.close();
      },
    };
  };

  /** Set when the last connection ended because its token expired: resume at once. */
  let expiredCut: { token: string | null; retryMs: number; brief: boolean } | undefined;

  setStatus("connecting");
  for (;;) {
    if (signal?.aborted) return aborted();
    let connection: Connection | undefined;
    let renewal: Renewal | undefined;
    let failure: BuildlogsError;
    try {
      let token: string | null;
      if (expiredCut) {
        const cut = expiredCut;
        expiredCut = undefined;
        // Cut right after it opened, something is off (clocks?): wait as a browser would, never spin.
        if (cut.brief && !(await sleep(cut.retryMs, signal))) return aborted();
        token = await getToken();
        // Not the expired token again (a token cache may hand it out a moment longer): ask again
        // after the server's short retry, a few times, then let the server judge.
        for (let i = 0; i < STALE_TOKEN_RETRIES && token !== null; i++) {
          const expiry = tokenExpiry(token);
          if (token !== cut.token && !(expiry && expiry.expiresAt <= Date.now())) break;
          if (!(await sleep(cut.retryMs * 2 ** i, signal))) return aborted();
          token = await getToken();
        }
      } else {
        token = await getToken();
      }
      if (signal?.aborted) return aborted();
      connection = new Connection(token, lastEventId, signal);
      if (!(await open(connection))) {
        setStatus("closed");
        return { reason: "ended" };
      }
      setStatus("open");
      renewal = renew(connection);

      for (;;) {
        // A fresh connection that is ready wins over a buffered line: the fresh one sends it too.
        const pulled: Pulled | Renewed = renewal?.result ?? (await connection.next());
        if (signal?.aborted) return aborted();
        if (pulled.kind === "end") break;
        if (pulled.kind === "interrupted") continue;
        if (pulled.kind === "renewed") {
          // Switch over: the old connection's unread lines come again on the new one.
          renewal?.adopt();
          renewal?.dispose();
          connection.close();
          connection = pulled.connection;
          renewal = renew(connection);
          const { start } = pulled;
          let event: LogStreamEvent = start;
          const resumed = start.id === connection.lastEventId;
          if (resumed && lastEventId !== undefined && (compareStreamIds(lastEventId, start.id) ?? 0) > 0) {
            // Lines up to lastEventId were delivered meanwhile: this stream goes on after them.
            event = {
              type: "start",
              id: lastEventId,
              data: { ...start.data, history_cursor: nextStreamId(lastEventId) ?? start.data.history_cursor },
            };
          } else {
            lastEventId = start.id; // the server starts over (e.g. an unknown position)
          }
          failures = 0;
          yield event;
          continue;
        }
        let event: LogStreamEvent | undefined;
        try {
          event = parseEvent(pulled.message);
        } catch (error) {
          return fail(toBuildlogsError(error, "bad event"));
        }
        if (!event) continue;
        if (event.type === "log" && lastEventId !== undefined && (compareStreamIds(event.id, lastEventId) ?? 1) <= 0) {
          continue; // already delivered by the connection this one replaced
        }
        if (event.type === "start" || event.type === "log") lastEventId = event.id;
        failures = 0; // the connection delivered: the next failure starts the backoff anew
        yield event;
        if (event.type === "done") {
          setStatus("closed");
          return { reason: "done", status: event.data.status };
        }
      }
      // A clean close before `done`. The token's expiry is routine: resume at once, unreported.
      const expiry = connection.expiry;
      if (
        connection.expiryRetryMs !== undefined ||
        (expiry !== undefined && Date.now() >= expiry.expiresAt - EXPIRY_CLOCK_SLACK_MS)
      ) {
        expiredCut = {
          token: connection.token,
          retryMs: connection.expiryRetryMs ?? DEFAULT_EXPIRY_RETRY_MS,
          brief: Date.now() - connection.openedAt < MIN_CONNECTION_MS,
        };
        continue;
      }
      // Anything else (a server shutdown, a proxy timeout) waits the server's retry, as a drop does.
      failure = new NetworkError("the stream closed before done");
    } catch (error) {
      if (signal?.aborted) return aborted();
      if (error instanceof BuildlogsError && !error.retryable) {
        if (reported.has(error)) throw error; // already reported by fail()
        return fail(error);
      }
      failure =
        error instanceof Stalled
          ? new NetworkError(`no data for ${livenessMs} ms: the connection is presumed dead`)
          : toBuildlogsError(error, "stream request failed");
    } finally {
      renewal?.dispose();
      connection?.close();
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
  /**
   * Each (re)connect's `start` event; `id` is the position the stream resumes after. After a move
   * to a fresh token, `id` is the last line delivered (the new connection goes on after it) and
   * `history_cursor` matches it; `status` is the job's status at that moment.
   */
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
