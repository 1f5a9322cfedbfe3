/**
 * One followed job: its stream, its lines and its state, shared by every hook watching it.
 *
 * Feeds live in a module-level registry keyed by server (or client object) and job id, and are
 * reference-counted: the first subscriber opens the stream, the last one to leave closes it, a
 * moment later (a zero-delay timer), so that React's StrictMode unmount-and-mount, or a component
 * handing the job to another, keeps the one connection. Nothing here runs at import: the
 * registry is an empty `Map`, and a feed touches timers only once subscribed (in the browser).
 *
 * Lines go into a {@link LineStore} as they come; subscribers are told at most once per
 * animation frame (and at most every {@link MIN_FRAME_MS}), however fast lines arrive.
 *
 * The window of lines held is normally the live tail (history above it, live lines appended).
 * `openAround` (a permalink) replaces it with a page from the middle of the log; the stream
 * stays open meanwhile, and `loadLater` pages down until a page reaches the stream's position,
 * where the window becomes the live tail again.
 */
import {
  BadRequestError,
  type BuildlogsClient,
  BuildlogsError,
  compareStreamIds,
  createBuildlogsClient,
  type DoneData,
  type FinalStatus,
  type HistoryPage,
  type LogLine,
  type LogStream,
  nextStreamId,
  type ResetData,
  type StartData,
  type StreamErrorInfo,
  type StreamStatus,
  NetworkError,
} from "@buildlogs/client";

import { EMPTY_LINES, LineStore, type LogLines } from "./lines.js";

/** The least time between two notifications (a 120 Hz screen gets every other frame). */
const MIN_FRAME_MS = 15;
/** Default window of lines held. */
export const DEFAULT_MAX_LINES = 50_000;
/** Default history page size ("Load earlier"). */
export const DEFAULT_PAGE_SIZE = 500;

/** `idle`: no job; otherwise the stream's connection state. */
export type ConnectionStatus = "idle" | StreamStatus;

/** The line a view was opened at (`openAround`): a permalink, or a search match. */
export interface AroundState {
  /** The line id asked for. */
  readonly id: string;
  /** True while its page loads. */
  readonly loading: boolean;
  /**
   * Whether the line itself is held. False once loaded: it was trimmed away or never written,
   * and the lines held are those around where it would stand.
   */
  readonly found: boolean;
  /** Why its page could not be loaded (the view went back to the latest lines). */
  readonly error: BuildlogsError | null;
}

/** What `openAround` resolves to. */
export interface AroundResult {
  /** Whether the line itself is held (else the view shows where it would stand). */
  readonly found: boolean;
  /** The index in `lines` of the line, or of the first line after where it would stand. */
  readonly index: number;
}

/** Everything a view renders, as one immutable object per change. */
export interface JobLogsState {
  /** The lines held, oldest first (at most `maxLines`). */
  readonly lines: LogLines;
  /** The connection: `connecting`, `open`, `reconnecting`, `closed` (`idle` with no job). */
  readonly status: ConnectionStatus;
  /** The job's own status (`queued`, `deps`, ..., `ready`, `failed`), once the server said it. */
  readonly jobStatus: string | null;
  /** `ready` or `failed` once the job finished and every line arrived. */
  readonly final: FinalStatus | null;
  /** The error that stopped the stream (401, 404, ...); `retry()` starts it again. */
  readonly error: BuildlogsError | null;
  /** Set when lines were trimmed away while disconnected (some are missing above the newest). */
  readonly reset: ResetData | null;
  /** The first line after the latest such gap: the lines right before it are missing. */
  readonly gapBeforeId: string | null;
  /** Older lines may exist above the oldest held. */
  readonly hasEarlier: boolean;
  readonly loadingEarlier: boolean;
  /** The last "Load earlier" failure (cleared by the next success). */
  readonly earlierError: BuildlogsError | null;
  /**
   * False while the newest line held is not the live tail: "Load earlier" on a full window let
   * the newest lines go. `missed` live lines arrived since; `jumpToLatest()` loads them back.
   */
  readonly atLiveEdge: boolean;
  readonly missed: number;
  /**
   * Newer lines exist below the newest held (`!atLiveEdge`): after `openAround`, or "Load
   * earlier" on a full window. `loadLater()` brings the next page; the page that reaches the
   * newest line joins the live tail (`atLiveEdge` again), with no gap and no duplicate.
   */
  readonly hasLater: boolean;
  readonly loadingLater: boolean;
  /** The last `loadLater` failure (cleared by the next success). */
  readonly laterError: BuildlogsError | null;
  /** The line the view was last opened at with `openAround`, or null. */
  readonly around: AroundState | null;
  /** Live lines received since the feed opened (two readings apart: how many arrived). */
  readonly received: number;
}

export const IDLE_STATE: JobLogsState = Object.freeze({
  lines: EMPTY_LINES,
  status: "idle",
  jobStatus: null,
  final: null,
  error: null,
  reset: null,
  gapBeforeId: null,
  hasEarlier: false,
  loadingEarlier: false,
  earlierError: null,
  atLiveEdge: true,
  missed: 0,
  hasLater: false,
  loadingLater: false,
  laterError: null,
  around: null,
  received: 0,
});

/** The state of a job before its feed has said anything (also what the server renders). */
export const CONNECTING_STATE: JobLogsState = Object.freeze({ ...IDLE_STATE, status: "connecting" });

/** Callbacks a subscriber may pass; each is called for every subscriber of a shared feed. */
export interface JobLogsCallbacks {
  /** Each live line, once, in order. */
  onLine?: (line: LogLine) => void;
  /** Each (re)connect's `start`. */
  onStart?: (data: StartData) => void;
  onReset?: (data: ResetData) => void;
  onDone?: (data: DoneData) => void;
  /** Every failure; `info.willRetry` false means the stream stopped (see `error`). */
  onError?: (error: BuildlogsError, info: StreamErrorInfo) => void;
  onStatusChange?: (status: ConnectionStatus) => void;
}

/** What a subscriber brings: the latest of its options, read when needed. */
export interface Subscriber {
  getToken?: (() => Promise<string | null> | string | null) | undefined;
  maxLines: number;
  callbacks: JobLogsCallbacks;
}

/** How to reach the server: a client of the caller's, or the options to make one. */
export type FeedSource =
  | { client: BuildlogsClient }
  | { baseUrl: string; credentials?: RequestInit["credentials"]; fetch?: typeof fetch };

export interface FeedSettings {
  pageSize: number;
  initialHistory: boolean;
  heartbeatIntervalMs?: number | undefined;
}

type Listener = () => void;

export class Feed {
  /** What subscribers see: published once per frame. */
  #state: JobLogsState = CONNECTING_STATE;
  /** The current values, ahead of `#state` until the next frame. */
  readonly #now: { -readonly [K in keyof Omit<JobLogsState, "lines">]: JobLogsState[K] } = { ...CONNECTING_STATE };
  #dirty = false;
  readonly #store: LineStore;
  readonly #client: BuildlogsClient;
  readonly #subscribers = new Map<Subscriber, Listener>();
  #stream: LogStream | undefined;
  #generation = 0;
  /** The first `start` of the current stream: its `history_cursor` is where history meets live. */
  #historyCursor: string | undefined;
  #initialLoaded = false;
  #frame: { cancel(): void } | undefined;
  #lastFrame = -Infinity;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #earlier: Promise<void> | undefined;
  #later: Promise<void> | undefined;
  #opening: { id: string; promise: Promise<AroundResult> } | undefined;
  /** Bumped whenever the newest lines held are dropped (a forward page fetched before no longer adjoins). */
  #droppedNewest = 0;
  /** While jumping back to the live tail: live lines that arrived during the fetch. */
  #rejoin: LogLine[] | undefined;
  #lastLiveId: string | undefined;
  /** Bumped whenever the oldest lines held are dropped (a page fetched before no longer adjoins). */
  #droppedOldest = 0;
  /** After a `reset`: the next line starts after a gap. */
  #gapPending = false;
  /** Bumped by every change of window (reset, jump): a page fetched for an older window is dropped. */
  #epoch = 0;

  constructor(
    readonly key: string,
    readonly jobId: string,
    source: FeedSource,
    readonly settings: FeedSettings,
    private readonly onClosed: (feed: Feed) => void,
  ) {
    this.#store = new LineStore(DEFAULT_MAX_LINES);
    this.#client =
      "client" in source
        ? source.client
        : createBuildlogsClient({
            baseUrl: source.baseUrl,
            getToken: () => this.#getToken(),
            ...(source.credentials ? { credentials: source.credentials } : {}),
            ...(source.fetch ? { fetch: source.fetch } : {}),
          });
  }

  get state(): JobLogsState {
    return this.#state;
  }

  /** Adds a subscriber (opening the stream for the first); returns its release. */
  subscribe(subscriber: Subscriber, listener: Listener): () => void {
    clearTimeout(this.#closeTimer);
    this.#closeTimer = undefined;
    this.#subscribers.set(subscriber, listener);
    this.#store.setMaxLines(this.#maxLines());
    if (!this.#stream && !this.#closed) this.#open(undefined);
    return () => {
      if (this.#subscribers.get(subscriber) !== listener) return;
      this.#subscribers.delete(subscriber);
      if (this.#subscribers.size > 0) {
        this.#store.setMaxLines(this.#maxLines());
        return;
      }
      // Not at once: StrictMode (and a component handing over to another) subscribes again now.
      this.#closeTimer = setTimeout(() => this.close(), 0);
    };
  }

  /** Stops the stream and leaves the registry. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#closeTimer);
    this.#frame?.cancel();
    this.#stream?.close();
    this.onClosed(this);
  }

  /** Starts again after a final error (401, 404, ...), resuming after the last line received. */
  retry(): void {
    if (this.#closed || this.#now.error === null) return;
    const after = this.#stream?.lastEventId;
    this.#stream?.close();
    this.#stream = undefined;
    this.#update({ error: null, status: "connecting" });
    this.#open(after);
  }

  /**
   * Loads the page of history right above the oldest line held (or, with none yet, right above
   * where the live lines begin). Concurrent calls share one request.
   */
  loadEarlier(): Promise<void> {
    this.#earlier ??= this.#loadEarlier().finally(() => {
      this.#earlier = undefined;
    });
    return this.#earlier;
  }

  /**
   * Back to the live tail after "Load earlier" let the newest lines go: the page that ends with
   * the last live line received, then every live line since. A no-op at the live edge.
   */
  async jumpToLatest(): Promise<void> {
    if (this.#now.atLiveEdge || this.#rejoin) return;
    const last = this.#stream?.lastEventId ?? this.#lastLiveId;
    const beforeId = last === undefined ? this.#historyCursor : nextStreamId(last);
    this.#rejoin = [];
    const epoch = ++this.#epoch;
    try {
      const page = await this.#client.getHistoryPage(this.jobId, {
        beforeId,
        limit: this.settings.pageSize,
      });
      if (epoch !== this.#epoch || this.#closed) return;
      this.#store.replace(page.lines);
      for (const line of this.#rejoin) this.#store.append(line);
      this.#update({ hasEarlier: page.has_more, atLiveEdge: true, missed: 0, earlierError: null, laterError: null });
    } catch (error) {
      this.#update({ earlierError: asBuildlogsError(error, "loading the latest lines failed") });
    } finally {
      if (epoch === this.#epoch) this.#rejoin = undefined;
    }
  }

  /**
   * Opens the view at line `id` (a permalink): the page around it replaces the lines held (the
   * line itself, or where it would stand when it was trimmed away or never written), and the
   * view leaves the live tail until `loadLater` reaches it again. A second call for the same
   * line while the first loads shares it. On failure the view goes back to the latest lines.
   */
  openAround(id: string): Promise<AroundResult> {
    if (this.#opening?.id === id) return this.#opening.promise;
    const promise = this.#openAround(id).finally(() => {
      if (this.#opening?.promise === promise) this.#opening = undefined;
    });
    this.#opening = { id, promise };
    return promise;
  }

  /** Loads the page below the newest line held (after `openAround`, or "Load earlier" on a full window). */
  loadLater(): Promise<void> {
    this.#later ??= this.#loadLater().finally(() => {
      this.#later = undefined;
    });
    return this.#later;
  }

  async #openAround(id: string): Promise<AroundResult> {
    if (compareStreamIds(id, id) === undefined) {
      throw new BadRequestError("a line id is <ms>-<seq>", { status: 400 });
    }
    if (this.#closed) return { found: false, index: 0 };
    const epoch = ++this.#epoch;
    this.#rejoin = undefined;
    // Whatever the stream's first `start` brings, the view opens here, not on the latest lines.
    this.#initialLoaded = true;
    this.#update({
      atLiveEdge: false,
      missed: 0,
      loadingLater: false,
      laterError: null,
      around: { id, loading: true, found: false, error: null },
    });
    let page: HistoryPage;
    try {
      page = await this.#client.getHistoryPage(this.jobId, { aroundId: id, limit: this.settings.pageSize });
    } catch (caught) {
      const error = asBuildlogsError(caught, "loading the lines around a permalink failed");
      if (epoch === this.#epoch && !this.#closed) {
        this.#update({ around: { id, loading: false, found: false, error } });
        void this.jumpToLatest();
      }
      throw error;
    }
    if (epoch !== this.#epoch || this.#closed) return { found: false, index: 0 };
    this.#store.replace([]);
    this.#placeForward(page, id);
    const { index, exact } = this.#store.view().find(id);
    this.#update({
      hasEarlier: page.has_more && page.oldest_id !== null,
      earlierError: null,
      around: { id, loading: false, found: exact, error: null },
    });
    return { found: exact, index };
  }

  async #loadLater(): Promise<void> {
    if (this.#closed || this.#now.atLiveEdge) return;
    const epoch = this.#epoch;
    const dropped = this.#droppedNewest;
    const afterId = this.#store.newest?.id ?? this.#now.around?.id;
    if (afterId === undefined) return;
    this.#update({ loadingLater: true });
    try {
      const page = await this.#client.getHistoryPage(this.jobId, { afterId, limit: this.settings.pageSize });
      if (epoch !== this.#epoch || this.#closed || dropped !== this.#droppedNewest) {
        this.#update({ loadingLater: false });
        return;
      }
      this.#placeForward(page, afterId);
      this.#update({ loadingLater: false, laterError: null });
    } catch (error) {
      this.#update({ loadingLater: false, laterError: asBuildlogsError(error, "loading later lines failed") });
      throw error;
    }
  }

  /**
   * Appends a page that starts right after the newest line held (or, in an empty window, after
   * or around `cursor`), and joins the live tail when it reaches it.
   *
   * The live stream stays open the whole time (for the job's status, and to count new lines),
   * at its own position L: every line up to L was delivered and every line after L will be. So
   * a page joins when it reaches L: its lines up to L are kept, those after L dropped (the
   * stream brings them next), and from then on live lines are appended again. No line is
   * missed or held twice, however the page and the stream raced. Once the stream is over (the
   * job finished), the page that says nothing newer exists is the end.
   */
  #placeForward(page: HistoryPage, cursor: string): void {
    const live = this.#livePosition();
    let lines = page.lines;
    let joined = false;
    if (live === null) {
      joined = !page.has_newer;
    } else if (live !== undefined) {
      const past = lines.findIndex((line) => (compareStreamIds(line.id, live) ?? 0) > 0);
      if (past >= 0) {
        lines = lines.slice(0, past);
        joined = true;
      } else {
        const reached = lines.at(-1)?.id ?? this.#store.newest?.id ?? cursor;
        joined = (compareStreamIds(reached, live) ?? -1) >= 0;
      }
    }
    let droppedOldest = 0;
    for (const line of lines) droppedOldest += this.#store.append(line);
    if (droppedOldest > 0) {
      this.#droppedOldest += 1;
      this.#update({ hasEarlier: true });
    }
    this.#update({ atLiveEdge: joined, ...(joined ? { missed: 0 } : {}) });
  }

  /**
   * Where the live stream stands: the id after which it delivers every line (undefined before
   * its first `start`), or null when no more lines will come (the job finished).
   */
  #livePosition(): string | null | undefined {
    if (this.#now.final !== null) return null;
    return this.#stream?.lastEventId;
  }

  #open(lastEventId: string | undefined): void {
    // Callbacks of a stream that was replaced (retry) or closed are ignored. (The client calls
    // `onStatusChange` before `streamJobLogs` returns, so this cannot compare the stream itself.)
    const generation = ++this.#generation;
    const current = () => generation === this.#generation && !this.#closed;
    const stream = this.#client.streamJobLogs(this.jobId, {
      lastEventId,
      ...(this.settings.heartbeatIntervalMs ? { heartbeatIntervalMs: this.settings.heartbeatIntervalMs } : {}),
      onStatusChange: (status) => {
        if (!current()) return;
        this.#update({ status });
        this.#each((c) => c.onStatusChange?.(status));
      },
      onStart: (data) => {
        if (!current()) return;
        this.#historyCursor ??= data.history_cursor;
        this.#update({ jobStatus: data.status });
        this.#each((c) => c.onStart?.(data));
        if (!this.#initialLoaded) {
          this.#initialLoaded = true;
          // Open on the latest lines; or, without that page, offer it.
          if (this.settings.initialHistory) void this.loadEarlier().catch(() => undefined);
          else this.#update({ hasEarlier: true });
        }
      },
      onLog: (line) => {
        if (!current()) return;
        this.#lastLiveId = line.id;
        if (this.#gapPending) {
          this.#gapPending = false;
          this.#update({ gapBeforeId: line.id });
        }
        if (this.#rejoin) this.#rejoin.push(line);
        else if (!this.#now.atLiveEdge) this.#update({ missed: this.#now.missed + 1 });
        else if (this.#store.append(line) > 0) {
          this.#droppedOldest += 1;
          if (!this.#now.hasEarlier) this.#update({ hasEarlier: true });
        }
        this.#update({ received: this.#now.received + 1 });
        this.#each((c) => c.onLine?.(line));
      },
      onReset: (data) => {
        if (!current()) return;
        if (data.reason === "unknown_position") {
          // The log was written anew: what we hold belongs to a log that no longer exists.
          this.#epoch++;
          this.#rejoin = undefined;
          this.#store.replace([]);
          this.#update({ hasEarlier: false, atLiveEdge: true, missed: 0 });
        } else {
          this.#gapPending = true;
        }
        this.#update({ reset: data });
        this.#each((c) => c.onReset?.(data));
      },
      onDone: (data) => {
        if (!current()) return;
        this.#update({ final: data.status, jobStatus: data.status });
        this.#each((c) => c.onDone?.(data));
      },
      onError: (error, info) => {
        if (!current()) return;
        if (!info.willRetry) this.#update({ error });
        this.#each((c) => c.onError?.(error, info));
      },
    });
    this.#stream = stream;
    void stream.finished.then((end) => {
      if (!current() || end.reason !== "error" || this.#now.error) return;
      // A callback threw, or something the client did not report: still a stopped stream.
      this.#update({ error: asBuildlogsError(end.error, "the stream failed"), status: "closed" });
    });
  }

  async #loadEarlier(): Promise<void> {
    if (this.#closed) return;
    const epoch = this.#epoch;
    const dropped = this.#droppedOldest;
    const oldestBefore = this.#store.oldest?.id;
    this.#update({ loadingEarlier: true });
    try {
      let beforeId = oldestBefore;
      if (beforeId === undefined) {
        beforeId = this.#historyCursor ?? (await this.#stream?.started)?.history_cursor;
        // The first start may have come meanwhile, with lines: start above them.
        beforeId = this.#store.oldest?.id ?? beforeId;
      }
      const page = await this.#client.getHistoryPage(this.jobId, {
        beforeId,
        limit: this.settings.pageSize,
      });
      // The window moved meanwhile (lines written anew, a jump, or the oldest dropped): this page
      // no longer sits right above it. (Live lines that came into an empty window during the
      // fetch do not move it: they follow the history cursor the page ends at.)
      if (epoch !== this.#epoch || this.#closed || dropped !== this.#droppedOldest) {
        // (A new window, from a jump or a permalink, says itself whether it has earlier lines.)
        this.#update({ loadingEarlier: false, ...(epoch === this.#epoch ? { hasEarlier: true } : {}) });
        return;
      }
      const droppedNewest = this.#store.prepend(page.lines);
      if (droppedNewest > 0) this.#droppedNewest += 1;
      this.#update({
        loadingEarlier: false,
        earlierError: null,
        hasEarlier: page.has_more && page.oldest_id !== null,
        ...(droppedNewest > 0 ? { atLiveEdge: false } : {}),
      });
    } catch (error) {
      this.#update({
        loadingEarlier: false,
        earlierError: asBuildlogsError(error, "loading earlier lines failed"),
      });
      throw error;
    }
  }

  #maxLines(): number {
    let max = 0;
    for (const s of this.#subscribers.keys()) max = Math.max(max, s.maxLines);
    return max || DEFAULT_MAX_LINES;
  }

  /** The most recently subscribed caller's `getToken` (they all stand for the same user). */
  #getToken(): Promise<string | null> | string | null {
    let latest: Subscriber["getToken"];
    for (const s of this.#subscribers.keys()) if (s.getToken) latest = s.getToken;
    return latest ? latest() : null;
  }

  #each(call: (callbacks: JobLogsCallbacks) => void): void {
    for (const s of this.#subscribers.keys()) call(s.callbacks);
  }

  #update(patch: Partial<Omit<JobLogsState, "lines" | "hasLater">>): void {
    Object.assign(this.#now, patch);
    if (patch.atLiveEdge !== undefined) this.#now.hasLater = !patch.atLiveEdge;
    this.#dirty = true;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#frame || this.#closed) return;
    const run = () => {
      this.#frame = undefined;
      const wait = this.#lastFrame + MIN_FRAME_MS - performance.now();
      if (wait > 0) {
        const timer = setTimeout(run, wait);
        this.#frame = { cancel: () => clearTimeout(timer) };
        return;
      }
      this.#flush();
    };
    if (typeof requestAnimationFrame === "function") {
      const id = requestAnimationFrame(run);
      this.#frame = { cancel: () => cancelAnimationFrame(id) };
    } else {
      const timer = setTimeout(run, MIN_FRAME_MS);
      this.#frame = { cancel: () => clearTimeout(timer) };
    }
  }

  #flush(): void {
    this.#lastFrame = performance.now();
    const lines = this.#store.view();
    if (!this.#dirty && lines === this.#state.lines) return;
    this.#state = Object.freeze({ ...this.#now, lines });
    this.#dirty = false;
    for (const listener of [...this.#subscribers.values()]) listener();
  }
}

function asBuildlogsError(error: unknown, message: string): BuildlogsError {
  return error instanceof BuildlogsError ? error : new NetworkError(message, { cause: error });
}

const byKey = new Map<string, Feed>();
const clientIds = new WeakMap<BuildlogsClient, number>();
let nextClientId = 0;

/** The registry key of a job on a server (or through a client object). */
export function feedKey(source: FeedSource, jobId: string): string {
  if ("client" in source) {
    let id = clientIds.get(source.client);
    if (id === undefined) {
      id = ++nextClientId;
      clientIds.set(source.client, id);
    }
    return `client:${id}\u0000${jobId}`;
  }
  return `url:${source.baseUrl.replace(/\/+$/, "")}\u0000${source.credentials ?? ""}\u0000${jobId}`;
}

/** The open feed for `key`, if any (no side effect: safe in render). */
export function peekFeed(key: string): Feed | undefined {
  return byKey.get(key);
}

/** The feed for `key`, created when none is open. */
export function obtainFeed(key: string, jobId: string, source: FeedSource, settings: FeedSettings): Feed {
  let feed = byKey.get(key);
  if (!feed) {
    feed = new Feed(key, jobId, source, settings, (closed) => {
      if (byKey.get(closed.key) === closed) byKey.delete(closed.key);
    });
    byKey.set(key, feed);
  }
  return feed;
}

/** How many feeds are open (for tests). */
export function openFeedCount(): number {
  return byKey.size;
}
