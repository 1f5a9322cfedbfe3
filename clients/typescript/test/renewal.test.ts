// Token expiry and renewal, with a scripted server (a fake fetch whose SSE bodies the test writes),
// for the cases a real server cannot easily be made to show. Tokens are unsigned JWT look-alikes:
// the client only reads their `exp` and `iat`.
import { describe, expect, expectTypeOf, it } from "vitest";

import { compareStreamIds, nextStreamId } from "../src/ids.js";
import {
  type BuildlogsError,
  type ResetData,
  type StartData,
  type StreamStatus,
  streamJobLogs,
  type StreamJobLogsOptions,
  UnauthorizedError,
} from "../src/index.js";
import { tokenExpiry } from "../src/token.js";

const encoder = new TextEncoder();

/** An SSE response body the test writes to. */
class ScriptedStream {
  readonly response: Response;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  endedAt: number | undefined;

  constructor() {
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
    });
    this.response = new Response(body, { headers: { "Content-Type": "text/event-stream" } });
  }

  send(...frames: string[]): this {
    try {
      for (const frame of frames) this.#controller.enqueue(encoder.encode(frame));
    } catch {
      // the client already let go
    }
    return this;
  }

  /** Ends the body cleanly, as the server does. */
  end(): void {
    this.endedAt = Date.now();
    try {
      this.#controller.close();
    } catch {
      // the client already let go
    }
  }
}

const retry = (ms: number) => `retry: ${ms}\n\n`;
const start = (id: string, status = "code") =>
  `id: ${id}\nevent: start\ndata: ${JSON.stringify({ status, history_cursor: nextStreamId(id) })}\n\n`;
const log = (id: string) =>
  `id: ${id}\nevent: log\ndata: ${JSON.stringify({ id, ts: "", source: "stdout", text: `line ${id}`, phase: "" })}\n\n`;
const done = (status = "ready") => `event: done\ndata: ${JSON.stringify({ status })}\n\n`;

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
/** A JWT-shaped token expiring `inMs` from now after a lifetime of `lifetimeMs`. */
function jwt(inMs: number, lifetimeMs = 60_000, sub = "user_test"): string {
  const exp = (Date.now() + inMs) / 1000;
  return `${b64url({ alg: "RS256", typ: "JWT" })}.${b64url({ sub, exp, iat: exp - lifetimeMs / 1000 })}.c2ln`;
}

interface SeenRequest {
  at: number;
  token: string | null;
  lastEventId: string | null;
  signal: AbortSignal;
}

/** A fetch that answers the n-th stream request with `answer(n, request)`. */
function server(answer: (n: number, request: SeenRequest) => Response | Promise<Response>) {
  const requests: SeenRequest[] = [];
  const fetchImpl: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    const seen: SeenRequest = {
      at: Date.now(),
      token: request.headers.get("authorization")?.replace(/^Bearer /, "") ?? null,
      lastEventId: request.headers.get("last-event-id"),
      signal: init!.signal!,
    };
    requests.push(seen);
    return answer(requests.length, seen);
  };
  return { fetch: fetchImpl, requests };
}

/** What the callbacks saw. */
function watch() {
  const seen = {
    lines: [] as string[],
    starts: [] as { id: string; data: StartData }[],
    resets: [] as ResetData[],
    errors: [] as { error: BuildlogsError; willRetry: boolean }[],
    statuses: [] as StreamStatus[],
  };
  const waiters: { id: string; resolve: () => void }[] = [];
  const callbacks: Partial<StreamJobLogsOptions> = {
    onLog: (line) => {
      seen.lines.push(line.id);
      for (const w of waiters.filter((w) => w.id === line.id)) w.resolve();
    },
    onStart: (data, id) => seen.starts.push({ id, data }),
    onReset: (data) => seen.resets.push(data),
    onError: (error, info) => seen.errors.push({ error, willRetry: info.willRetry }),
    onStatusChange: (status) => seen.statuses.push(status),
  };
  /** Resolves once line `id` was delivered. */
  const delivered = (id: string) =>
    seen.lines.includes(id) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ id, resolve }));
  return { seen, callbacks, delivered };
}

const base = { baseUrl: "http://api.test", jobId: "j" };

describe("renewal before the token expires", () => {
  it("opens the next connection with a later token and the last id, switches at its start: no duplicate, no error", async () => {
    const first = jwt(1_200, 2_000); // renewed a quarter of its 2 s lifetime before exp
    const second = jwt(60_000);
    const { seen, callbacks, delivered } = watch();
    const old = new ScriptedStream();
    const api = server(async (n) => {
      if (n === 1) return old.send(retry(3000), start("1-0"), log("1-1")).response;
      // Meanwhile the old connection goes on: 1-2 arrives there before the new one starts.
      old.send(log("1-2"));
      await delivered("1-2");
      return new ScriptedStream().send(retry(3000), start("1-1"), log("1-2"), log("1-3"), done()).response;
    });
    const stream = streamJobLogs({ ...base, getToken: () => (api.requests.length === 0 ? first : second), fetch: api.fetch, ...callbacks });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });

    expect(seen.lines).toEqual(["1-1", "1-2", "1-3"]);
    expect(seen.errors).toEqual([]);
    expect(seen.statuses).toEqual(["connecting", "open", "closed"]);
    expect(api.requests.map((r) => [r.token, r.lastEventId])).toEqual([
      [first, null],
      [second, "1-1"],
    ]);
    expect(api.requests[1]!.at).toBeLessThan(tokenExpiry(first)!.expiresAt);
    expect(api.requests[1]!.at).toBeGreaterThanOrEqual(tokenExpiry(first)!.expiresAt - 600);
    expect(api.requests[0]!.signal.aborted).toBe(true); // let go at the switch, though it never ended
    // The new connection's start says where delivery goes on: after 1-2, with the matching cursor.
    expect(seen.starts.map((s) => [s.id, s.data.history_cursor])).toEqual([
      ["1-0", "1-1"],
      ["1-2", "1-3"],
    ]);
    expect(stream.lastEventId).toBe("1-3");
  });

  it("while getToken() returns the same token, asks again a little later (spaced), then renews", async () => {
    const first = jwt(2_000, 4_000); // margin 1 s (from 1 s before exp): asks again every 250 ms
    const second = jwt(60_000);
    const calls: number[] = [];
    const api = server((n) =>
      n === 1
        ? new ScriptedStream().send(retry(3000), start("1-0"), log("1-1")).response
        : new ScriptedStream().send(start("1-1"), done()).response,
    );
    const { seen, callbacks } = watch();
    const stream = streamJobLogs({
      ...base,
      getToken: () => {
        calls.push(Date.now());
        return calls.length <= 3 ? first : second; // the connect, then two renewal attempts: no luck
      },
      fetch: api.fetch,
      ...callbacks,
    });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(calls).toHaveLength(4);
    for (let i = 2; i < calls.length; i++) expect(calls[i]! - calls[i - 1]!).toBeGreaterThanOrEqual(240);
    expect(api.requests.map((r) => r.token)).toEqual([first, second]);
    expect(api.requests[1]!.at).toBeLessThan(tokenExpiry(first)!.expiresAt);
    expect(seen.errors).toEqual([]);
  });

  it("a 401 to the renewal is not reported while the stream goes on; after the cut it is, once, and final", async () => {
    const first = jwt(1_200, 2_000);
    const revoked = jwt(60_000);
    const old = new ScriptedStream();
    const unauthorized = () =>
      new Response(JSON.stringify({ type: "about:blank", title: "Unauthorized", status: 401, detail: "signed out", code: "unauthorized" }), {
        status: 401,
        headers: { "Content-Type": "application/problem+json" },
      });
    const api = server((n) => {
      if (n === 1) return old.send(retry(3000), start("1-0"), log("1-1")).response;
      if (n === 2) setTimeout(() => old.send(log("1-2"), retry(250)).end(), 100); // then the cut
      return unauthorized();
    });
    const { seen, callbacks } = watch();
    const stream = streamJobLogs({ ...base, getToken: () => (api.requests.length === 0 ? first : revoked), fetch: api.fetch, ...callbacks });
    const end = await stream.finished;
    expect(end.reason).toBe("error");
    expect((end as { error: unknown }).error).toBeInstanceOf(UnauthorizedError);
    expect(seen.lines).toEqual(["1-1", "1-2"]);
    expect(seen.errors.map((e) => [e.error.kind, e.willRetry])).toEqual([["unauthorized", false]]);
    expect(api.requests.map((r) => r.token)).toEqual([first, revoked, revoked]);
    expect(api.requests[2]!.lastEventId).toBe("1-2");
    expect(seen.statuses).toEqual(["connecting", "open", "closed"]);
  });

  it("a renewal answered with a fresh start (unknown position): lines with lower ids are delivered, not dropped", async () => {
    const api = server((n) =>
      n === 1
        ? new ScriptedStream().send(retry(3000), start("5-0"), log("5-1")).response
        : new ScriptedStream().send(
            start("0-0"),
            `event: reset\ndata: ${JSON.stringify({ reason: "unknown_position", oldest_id: "1-0" })}\n\n`,
            log("1-0"),
            log("1-1"),
            done(),
          ).response,
    );
    const { seen, callbacks } = watch();
    let calls = 0;
    const stream = streamJobLogs({ ...base, getToken: () => jwt(calls++ === 0 ? 1_200 : 60_000, 2_000), fetch: api.fetch, ...callbacks });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(api.requests[1]!.lastEventId).toBe("5-1");
    expect(seen.starts.map((s) => s.id)).toEqual(["5-0", "0-0"]);
    expect(seen.resets).toEqual([{ reason: "unknown_position", oldest_id: "1-0" }]);
    expect(seen.lines).toEqual(["5-1", "1-0", "1-1"]);
  });

  it("abort during a renewal closes both connections", async () => {
    const controller = new AbortController();
    const api = server((n, request) => {
      if (n === 1) return new ScriptedStream().send(retry(3000), start("1-0"), log("1-1")).response;
      // The renewal's answer never comes; abort meanwhile.
      setTimeout(() => controller.abort(), 20);
      return new Promise<Response>((_, reject) => request.signal.addEventListener("abort", () => reject(request.signal.reason)));
    });
    let calls = 0;
    const stream = streamJobLogs({ ...base, getToken: () => jwt(calls++ === 0 ? 1_200 : 60_000, 2_000), fetch: api.fetch, signal: controller.signal });
    expect(await stream.finished).toEqual({ reason: "aborted" });
    expect(api.requests).toHaveLength(2);
    expect(api.requests.every((r) => r.signal.aborted)).toBe(true);
  });
});

describe("the end of a stream whose token expired", () => {
  it("a short retry then the end: resumed at once with a fresh token, unreported, status stays open (opaque tokens too)", async () => {
    const first = new ScriptedStream();
    const api = server((n) => {
      if (n === 1) {
        setTimeout(() => first.send(retry(250)).end(), 1_100);
        return first.send(retry(3000), start("1-0"), log("1-1")).response;
      }
      return new ScriptedStream().send(retry(3000), start("1-1"), log("1-2"), done()).response;
    });
    const { seen, callbacks } = watch();
    let calls = 0;
    const stream = streamJobLogs({ ...base, getToken: () => `opaque-${++calls}`, fetch: api.fetch, ...callbacks });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(seen.lines).toEqual(["1-1", "1-2"]);
    expect(seen.errors).toEqual([]);
    expect(seen.statuses).toEqual(["connecting", "open", "closed"]);
    expect(api.requests.map((r) => [r.token, r.lastEventId])).toEqual([
      ["opaque-1", null],
      ["opaque-2", "1-1"],
    ]);
    expect(api.requests[1]!.at - first.endedAt!).toBeLessThan(100); // no backoff (it would be 1.5-3 s)
  });

  it("cuts right after each connect (something is off) are not a tight loop: each waits the short retry", async () => {
    const api = server((n) =>
      n <= 3
        ? new Response(retry(3000) + start("1-0") + retry(250), { headers: { "Content-Type": "text/event-stream" } })
        : new ScriptedStream().send(start("1-0"), done()).response,
    );
    const { seen, callbacks } = watch();
    let calls = 0;
    const stream = streamJobLogs({ ...base, getToken: () => `opaque-${++calls}`, fetch: api.fetch, ...callbacks });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(api.requests).toHaveLength(4);
    for (let i = 1; i < 4; i++) expect(api.requests[i]!.at - api.requests[i - 1]!.at).toBeGreaterThanOrEqual(240);
    expect(seen.errors).toEqual([]);
    expect(seen.statuses).toEqual(["connecting", "open", "closed"]);
  });

  it("without a short retry, a clean end at the token's exp counts as the cut too", async () => {
    const token = jwt(300, 2_000);
    const api = server((n) => {
      if (n === 1) {
        const s = new ScriptedStream().send(retry(3000), start("1-0"));
        setTimeout(() => s.end(), 300);
        return s.response;
      }
      return new ScriptedStream().send(start("1-0"), done()).response;
    });
    const { seen, callbacks } = watch();
    let calls = 0;
    const stream = streamJobLogs({
      ...base,
      getToken: () => (calls++ === 0 ? token : jwt(60_000)),
      fetch: api.fetch,
      renewBeforeExpiryMs: false,
      ...callbacks,
    });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(seen.errors).toEqual([]);
    expect(seen.statuses).toEqual(["connecting", "open", "closed"]);
    expect(api.requests).toHaveLength(2);
  });

  it("after the cut, getToken() handing out the expired token again is asked again after the short retry", async () => {
    const expired = jwt(-100, 2_000);
    const fresh = jwt(60_000);
    const calls: number[] = [];
    const api = server((n) =>
      n === 1
        ? // The body ends right after the short retry: the cut.
          new Response(retry(3000) + start("1-0") + log("1-1") + retry(200), { headers: { "Content-Type": "text/event-stream" } })
        : new ScriptedStream().send(start("1-1"), done()).response,
    );
    const { seen, callbacks } = watch();
    const stream = streamJobLogs({
      ...base,
      getToken: () => {
        calls.push(Date.now());
        return calls.length <= 2 ? expired : fresh;
      },
      fetch: api.fetch,
      renewBeforeExpiryMs: false,
      ...callbacks,
    });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(calls).toHaveLength(3);
    expect(calls[2]! - calls[1]!).toBeGreaterThanOrEqual(190); // the server's short retry
    expect(api.requests.map((r) => r.token)).toEqual([expired, fresh]);
    expect(seen.errors).toEqual([]);
  });

  it("a clean end that is no expiry (no short retry, token good for long: a shutdown) backs off and is reported", async () => {
    const api = server((n) =>
      n === 1
        ? new Response(retry(3000) + start("1-0") + log("1-1"), { headers: { "Content-Type": "text/event-stream" } })
        : new ScriptedStream().send(start("1-1"), done()).response,
    );
    const { seen, callbacks } = watch();
    const stream = streamJobLogs({ ...base, getToken: () => jwt(600_000), fetch: api.fetch, ...callbacks });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(seen.errors.map((e) => [e.error.kind, e.error.message, e.willRetry])).toEqual([
      ["network", "the stream closed before done", true],
    ]);
    expect(seen.statuses).toEqual(["connecting", "open", "reconnecting", "open", "closed"]);
    // The server's retry: 3000, with jitter: at least 1.5 s.
    expect(api.requests[1]!.at - api.requests[0]!.at).toBeGreaterThanOrEqual(1_500);
  });
});

describe("payload types", () => {
  it("oldest_id is string | null, filled in when missing; reset reasons include unknown_position", async () => {
    expectTypeOf<ResetData["oldest_id"]>().toEqualTypeOf<string | null>();
    expectTypeOf<"unknown_position">().toExtend<ResetData["reason"]>();
    expectTypeOf<"trimmed">().toExtend<ResetData["reason"]>();
    const api = server(() =>
      new ScriptedStream().send(start("1-0"), `event: reset\ndata: {"reason":"trimmed"}\n\n`, done()).response,
    );
    const { seen, callbacks } = watch();
    await streamJobLogs({ ...base, getToken: () => null, fetch: api.fetch, ...callbacks }).finished;
    expect(seen.resets).toEqual([{ reason: "trimmed", oldest_id: null }]);
  });
});

describe("helpers", () => {
  it("tokenExpiry reads exp and iat from a JWT, and nothing from anything else", () => {
    const claims = { sub: "user_ü", exp: 2_000_000_000, iat: 1_999_999_940 };
    const token = `${b64url({ alg: "RS256" })}.${b64url(claims)}.sig`;
    expect(tokenExpiry(token)).toEqual({ expiresAt: 2_000_000_000_000, lifetimeMs: 60_000 });
    expect(tokenExpiry(`${b64url({})}.${b64url({ exp: 1.5 })}.x`)).toEqual({ expiresAt: 1500, lifetimeMs: undefined });
    for (const other of [
      null,
      "",
      "opaque",
      "a.b",
      `${b64url({})}.${b64url({ sub: "x" })}.x`, // no exp
      `${b64url({})}.${b64url({ exp: "soon" })}.x`,
      `${b64url({})}.not base64!.x`,
      `${b64url({})}.${Buffer.from("not json").toString("base64url")}.x`,
      `${b64url({})}.${b64url([1])}.x`,
    ]) {
      expect(tokenExpiry(other)).toBeUndefined();
    }
  });

  it("stream ids compare numerically; the next id is the exclusive bound after one", () => {
    expect(compareStreamIds("9-0", "10-0")).toBeLessThan(0);
    expect(compareStreamIds("10-2", "10-10")).toBeLessThan(0);
    expect(compareStreamIds("10-2", "10-2")).toBe(0);
    expect(compareStreamIds("18446744073709551615-0", "18446744073709551614-9")).toBeGreaterThan(0);
    expect(compareStreamIds("1", "1-0")).toBeUndefined();
    expect(nextStreamId("5-9")).toBe("5-10");
    expect(nextStreamId("5-18446744073709551615")).toBe("6-0");
    expect(nextStreamId("18446744073709551616-0")).toBeUndefined();
  });
});
