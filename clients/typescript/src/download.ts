import { errorFromResponse, ProtocolError, toBuildlogsError } from "./errors.js";
import type { ApiClient } from "./history.js";

export interface DownloadOptions {
  /** `keep` (default) or `strip` the text's ANSI escape sequences (colours, links, titles). */
  ansi?: "keep" | "strip" | undefined;
  /** Start each line with its timestamp and a space (default `false`). */
  timestamps?: boolean | undefined;
  /** Aborts the download (the request, or the body while it is read). */
  signal?: AbortSignal | undefined;
}

/** A job's whole log as text, as the server sends it: read it once, as a stream or a Blob. */
export interface LogDownload {
  /** The file name the server suggests: `<job_id>.log`. */
  readonly filename: string;
  /**
   * The id of the last line in the body (null when it is empty): follow on live from it by
   * resuming a stream there.
   */
  readonly lastId: string | null;
  /** Whether lines older than the body's first one were trimmed away before the download. */
  readonly truncated: boolean;
  /** The body as it arrives (UTF-8 text, one line per `\n`). */
  readonly body: ReadableStream<Uint8Array>;
  /** The whole body as a `text/plain` Blob (e.g. for `URL.createObjectURL` and a download link). */
  blob(): Promise<Blob>;
  /** The whole body as a string. */
  text(): Promise<string>;
}

/**
 * Downloads a job's whole retained log, up to the newest line when the server accepted the
 * request. Authenticated like every other call (`getToken`), which a plain link cannot be: to
 * save it from a browser, make a Blob of it. A download in progress counts against the user's
 * stream cap (`TooManyRequestsError` past it). Throws a typed {@link BuildlogsError} on a
 * refused request; a body cut short fails its reads.
 */
export async function downloadLog(api: ApiClient, jobId: string, options: DownloadOptions = {}): Promise<LogDownload> {
  const query: { ansi?: "keep" | "strip"; timestamps?: boolean } = {};
  if (options.ansi !== undefined) query.ansi = options.ansi;
  if (options.timestamps !== undefined) query.timestamps = options.timestamps;
  let result;
  try {
    result = await api.GET("/api/jobs/{job_id}/logs/raw", {
      params: { path: { job_id: jobId }, query },
      parseAs: "stream",
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw toBuildlogsError(error, "download request failed");
  }
  const response = result.response;
  if (!response.ok) throw await errorFromResponse(response, result.error ?? undefined);
  const body = response.body;
  if (body === null) throw new ProtocolError("the download has no body", { status: response.status });
  const disposition = response.headers.get("Content-Disposition") ?? "";
  return {
    filename: /filename="([^"]+)"/.exec(disposition)?.[1] ?? `${jobId}.log`,
    lastId: response.headers.get("Buildlogs-Last-Id"),
    truncated: response.headers.get("Buildlogs-Truncated") === "true",
    body,
    blob: async () => new Blob([await new Response(body).arrayBuffer()], { type: "text/plain;charset=utf-8" }),
    text: () => new Response(body).text(),
  };
}
