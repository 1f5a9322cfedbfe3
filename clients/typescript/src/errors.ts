import type { ErrorCode, Problem } from "./types.js";

/**
 * What kind of failure a {@link BuildlogsError} is. `unauthorized`, `not_found`, `bad_request` and
 * `protocol` are final (retrying the same request cannot help); the others are transient.
 */
export type BuildlogsErrorKind =
  | "unauthorized"
  | "not_found"
  | "bad_request"
  | "too_many_requests"
  | "unavailable"
  | "server"
  | "network"
  | "protocol";

export interface BuildlogsErrorInit {
  status?: number;
  problem?: Problem;
  retryAfterMs?: number;
  cause?: unknown;
}

/** Every error the client raises or reports. Match on `kind` or `code`, or use `instanceof`. */
export class BuildlogsError extends Error {
  override name = "BuildlogsError";
  /** What kind of failure this is. */
  readonly kind: BuildlogsErrorKind;
  /** The HTTP status; 0 when no response arrived (network failure, dropped stream). */
  readonly status: number;
  /** The problem body's stable `code`, when the server sent one. */
  readonly code: ErrorCode | undefined;
  /** The full problem body (`application/problem+json`), when the server sent one. */
  readonly problem: Problem | undefined;
  /** The server's `Retry-After`, in milliseconds, when it sent one (and CORS let us read it). */
  readonly retryAfterMs: number | undefined;

  constructor(kind: BuildlogsErrorKind, message: string, init: BuildlogsErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.kind = kind;
    this.status = init.status ?? 0;
    this.problem = init.problem;
    this.code = init.problem?.code;
    this.retryAfterMs = init.retryAfterMs;
  }

  /** Whether the same request may succeed later (429, 503, 5xx, network). */
  get retryable(): boolean {
    return (
      this.kind === "too_many_requests" ||
      this.kind === "unavailable" ||
      this.kind === "server" ||
      this.kind === "network"
    );
  }
}

/** 401: missing, invalid or expired session token (`unauthorized`). */
export class UnauthorizedError extends BuildlogsError {
  override name = "UnauthorizedError";
  declare readonly kind: "unauthorized";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("unauthorized", message, { status: 401, ...init });
  }
}

/** 404: no such job, or not the caller's (`job_not_found`); the two are indistinguishable. */
export class NotFoundError extends BuildlogsError {
  override name = "NotFoundError";
  declare readonly kind: "not_found";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("not_found", message, { status: 404, ...init });
  }
}

/** 400: malformed job id, cursor or limit (`invalid_job_id`, `invalid_cursor`, `invalid_limit`). */
export class BadRequestError extends BuildlogsError {
  override name = "BadRequestError";
  declare readonly kind: "bad_request";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("bad_request", message, { status: 400, ...init });
  }
}

/** 429: too many open streams (`too_many_streams`); retry after `retryAfterMs`. */
export class TooManyRequestsError extends BuildlogsError {
  override name = "TooManyRequestsError";
  declare readonly kind: "too_many_requests";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("too_many_requests", message, { status: 429, ...init });
  }
}

/** 503: the log store is down or not answering (`store_unavailable`); retry after `retryAfterMs`. */
export class ServiceUnavailableError extends BuildlogsError {
  override name = "ServiceUnavailableError";
  declare readonly kind: "unavailable";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("unavailable", message, { status: 503, ...init });
  }
}

/** Any other 5xx (`internal`, or a proxy's error page). */
export class ServerError extends BuildlogsError {
  override name = "ServerError";
  declare readonly kind: "server";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("server", message, init);
  }
}

/** No response, or a stream that broke off (dropped, stalled, closed before `done`). */
export class NetworkError extends BuildlogsError {
  override name = "NetworkError";
  declare readonly kind: "network";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("network", message, { status: 0, ...init });
  }
}

/** The server answered something this client does not understand (not SSE, bad JSON). */
export class ProtocolError extends BuildlogsError {
  override name = "ProtocolError";
  declare readonly kind: "protocol";
  constructor(message: string, init: BuildlogsErrorInit = {}) {
    super("protocol", message, init);
  }
}

/** Whether `value` looks like the server's problem body. */
export function isProblem(value: unknown): value is Problem {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.code === "string" && typeof v.status === "number" && typeof v.title === "string";
}

/**
 * Parses a `Retry-After` header (delay-seconds or an HTTP date) into milliseconds; `undefined`
 * when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * The typed error for a non-2xx response. `body` is the already-parsed body when the caller has
 * read it (openapi-fetch does); otherwise the body is read here.
 */
export async function errorFromResponse(response: Response, body?: unknown): Promise<BuildlogsError> {
  let parsed = body;
  if (parsed === undefined) {
    try {
      const text = await response.text();
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
  }
  const problem = isProblem(parsed) ? parsed : undefined;
  const init: BuildlogsErrorInit = {
    status: response.status,
    ...(problem ? { problem } : {}),
    ...(() => {
      const ms = parseRetryAfter(response.headers.get("Retry-After"));
      return ms === undefined ? {} : { retryAfterMs: ms };
    })(),
  };
  const message =
    problem?.detail ?? problem?.title ?? `HTTP ${response.status} ${response.statusText}`.trim();
  switch (response.status) {
    case 400:
      return new BadRequestError(message, init);
    case 401:
      return new UnauthorizedError(message, init);
    case 404:
      return new NotFoundError(message, init);
    case 429:
      return new TooManyRequestsError(message, init);
    case 503:
      return new ServiceUnavailableError(message, init);
    default:
      if (response.status >= 500) return new ServerError(message, init);
      // 403, 405, 410, ...: nothing a retry would fix.
      return new ProtocolError(message, init);
  }
}

/** Wraps anything thrown by fetch or a stream read into a {@link BuildlogsError}. */
export function toBuildlogsError(error: unknown, context: string): BuildlogsError {
  if (error instanceof BuildlogsError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new NetworkError(`${context}: ${detail}`, { cause: error });
}
