/** Options shared by every call: where the server is and how to authenticate. */
export interface ConnectionOptions {
  /**
   * The server's origin (and path prefix, if any), e.g. `https://logs.example.com`. An empty string
   * means the page's own origin (browsers only).
   */
  baseUrl: string;
  /**
   * Returns the Clerk session token to send as `Authorization: Bearer <token>`, or `null` to send
   * none (then a browser on the same site may authenticate with the `__session` cookie). Called
   * before every request and every stream (re)connect, so pass Clerk's `getToken` as is: it
   * returns a fresh token when the cached one is about to expire.
   */
  getToken?: () => Promise<string | null> | string | null;
  /** A `fetch` to use instead of `globalThis.fetch` (tests, instrumentation, polyfills). */
  fetch?: typeof globalThis.fetch;
  /** `credentials` for every request (e.g. `"include"` to send the `__session` cookie cross-site). */
  credentials?: RequestInit["credentials"];
}

export function trimBaseUrl(baseUrl: string): string {
  return baseUrl.replace(/\/+$/, "");
}

export function resolveFetch(options: ConnectionOptions): typeof globalThis.fetch {
  const f = options.fetch;
  // Never call a browser's fetch as a method of another object ("Illegal invocation").
  return f ? (input, init) => f(input, init) : (input, init) => globalThis.fetch(input, init);
}

/** Sleeps for `ms`, resolving early (with `false`) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
