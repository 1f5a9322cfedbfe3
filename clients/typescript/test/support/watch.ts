import type { BuildlogsError, StreamErrorInfo, StreamStatus } from "../../src/index.js";
import { tokenExpiry } from "../../src/token.js";

/** One stream request as the server saw it, and when the client let go of it. */
export interface StreamRequest {
  at: number;
  /** The bearer token's `exp`, in ms. */
  expiresAt: number | undefined;
  lastEventId: string | null;
  /** When the client aborted or finished with the request (its signal aborted). */
  closedAt: number | undefined;
}

/** A `fetch` that records the stream requests (token expiry, Last-Event-ID, when they were let go). */
export function streamRecordingFetch() {
  const requests: StreamRequest[] = [];
  const fetchImpl: typeof fetch = (input, init) => {
    const request = new Request(input, init);
    if (request.url.endsWith("/stream")) {
      const token = request.headers.get("authorization")?.replace(/^Bearer /, "") ?? null;
      const entry: StreamRequest = {
        at: Date.now(),
        expiresAt: tokenExpiry(token)?.expiresAt,
        lastEventId: request.headers.get("last-event-id"),
        closedAt: undefined,
      };
      requests.push(entry);
      const signal = init?.signal ?? (input instanceof Request ? input.signal : undefined);
      signal?.addEventListener("abort", () => {
        entry.closedAt = Date.now();
      });
    }
    return fetch(request);
  };
  return { fetch: fetchImpl, requests };
}

/** What a viewer saw: lines with their receive times, errors and status changes. */
export interface Watched {
  lines: { id: string; text: string; at: number }[];
  errors: { kind: string; message: string; willRetry: boolean }[];
  statuses: StreamStatus[];
  starts: { id: string; historyCursor: string }[];
}

export function watcher() {
  const watched: Watched = { lines: [], errors: [], statuses: [], starts: [] };
  return {
    watched,
    callbacks: {
      onLog: (line: { id: string; text: string }) =>
        watched.lines.push({ id: line.id, text: line.text, at: performance.now() }),
      onError: (error: BuildlogsError, info: StreamErrorInfo) =>
        watched.errors.push({ kind: error.kind, message: error.message, willRetry: info.willRetry }),
      onStatusChange: (status: StreamStatus) => watched.statuses.push(status),
      onStart: (data: { history_cursor: string }, id: string) =>
        watched.starts.push({ id, historyCursor: data.history_cursor }),
    },
  };
}

/** The longest wait between two consecutive lines, in ms. */
export function longestGap(times: number[]): number {
  let longest = 0;
  for (let i = 1; i < times.length; i++) longest = Math.max(longest, times[i]! - times[i - 1]!);
  return longest;
}
