// Client behaviour that a real server cannot easily be made to show: scripted responses.
import { describe, expect, it } from "vitest";

import { errorFromResponse } from "../src/errors.js";
import {
  type BuildlogsError,
  parseRetryAfter,
  ProtocolError,
  ServerError,
  type StreamErrorInfo,
  streamJobLogs,
} from "../src/index.js";

type Step = () => Response | Promise<Response>;

/** A fetch that plays `steps` in order (the last one repeats) and records the requests. */
function scripted(steps: Step[]) {
  const requests: Request[] = [];
  const fetchImpl: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    requests.push(request);
    const step = steps[Math.min(requests.length - 1, steps.length - 1)]!;
    return step();
  };
  return { fetch: fetchImpl, requests };
}

const sse = (body: string) => () =>
  new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
const status = (code: number, headers: Record<string, string> = {}) => () =>
  new Response(code === 204 ? null : "oops", { status: code, headers });

describe("Retry-After", () => {
  it("parses seconds and HTTP dates", () => {
    expect(parseRetryAfter("5")).toBe(5000);
    expect(parseRetryAfter(" 0 ")).toBe(0);
    const now = Date.parse("2026-11-24T03:00:00Z");
    expect(parseRetryAfter("Tue, 24 Nov 2026 03:00:07 GMT", now)).toBe(7000);
    expect(parseRetryAfter("Tue, 24 Nov 2026 02:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon")).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });

  it("a non-problem 502 from a proxy is a retryable ServerError without a code", async () => {
    const error = await errorFromResponse(new Response("<html>Bad gateway</html>", { status: 502 }));
    expect(error).toBeInstanceOf(ServerError);
    expect(error.code).toBeUndefined();
    expect(error.retryable).toBe(true);
  });
});

describe("reconnection", () => {
  it("backs off exponentially with jitter, then gives up after maxRetries", async () => {
    const script = scripted([status(500)]);
    const delays: number[] = [];
    const stream = streamJobLogs({
      baseUrl: "http://api.test",
      jobId: "j",
      getToken: async () => "t",
      fetch: script.fetch,
      backoff: { initialDelayMs: 20, factor: 2, maxDelayMs: 100, maxRetries: 5 },
      onError: (_, info) => {
        if (info.willRetry) delays.push(info.delayMs!);
      },
    });
    const end = await stream.finished;
    expect(end.reason).toBe("error");
    expect((end as { error: BuildlogsError }).error).toBeInstanceOf(ServerError);
    expect(script.requests).toHaveLength(6);
    const steps = [20, 40, 80, 100, 100];
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(steps[i]! / 2);
      expect(d).toBeLessThanOrEqual(steps[i]!);
    });
  });

  it("uses the server's retry: as the first delay unless told otherwise", async () => {
    const script = scripted([
      sse("retry: 300\n\nid: 1-0\nevent: start\ndata: {\"status\":\"code\",\"history_cursor\":\"1-1\"}\n\n"),
      sse('id: 1-0\nevent: start\ndata: {"status":"ready","history_cursor":"1-1"}\n\nevent: done\ndata: {"status":"ready"}\n\n'),
    ]);
    const infos: StreamErrorInfo[] = [];
    const stream = streamJobLogs({
      baseUrl: "http://api.test",
      jobId: "j",
      getToken: async () => "t",
      fetch: script.fetch,
      onError: (_, info) => infos.push(info),
    });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(infos).toHaveLength(1);
    expect(infos[0]!.delayMs).toBeGreaterThanOrEqual(150);
    expect(infos[0]!.delayMs).toBeLessThanOrEqual(300);
    expect(script.requests[1]!.headers.get("last-event-id")).toBe("1-0");
  });

  it("a getToken() failure is retried; each connect asks again", async () => {
    let calls = 0;
    const script = scripted([sse('id: 0-0\nevent: start\ndata: {"status":"ready","history_cursor":"0-1"}\n\nevent: done\ndata: {"status":"ready"}\n\n')]);
    const stream = streamJobLogs({
      baseUrl: "http://api.test",
      jobId: "j",
      getToken: async () => {
        calls += 1;
        if (calls === 1) throw new Error("clerk offline");
        return "fresh";
      },
      fetch: script.fetch,
      backoff: { initialDelayMs: 10 },
    });
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(calls).toBe(2);
    expect(script.requests).toHaveLength(1);
    expect(script.requests[0]!.headers.get("authorization")).toBe("Bearer fresh");
  });

  it("a 200 that is not an event stream is a final ProtocolError", async () => {
    const script = scripted([() => new Response("<html>login</html>", { headers: { "Content-Type": "text/html" } })]);
    const stream = streamJobLogs({ baseUrl: "http://api.test", jobId: "j", getToken: async () => "t", fetch: script.fetch });
    const end = await stream.finished;
    expect((end as { error: unknown }).error).toBeInstanceOf(ProtocolError);
    expect(script.requests).toHaveLength(1);
  });

  it("bad JSON in an event is a final ProtocolError", async () => {
    const script = scripted([sse("id: 1-0\nevent: log\ndata: {not json\n\n")]);
    const stream = streamJobLogs({ baseUrl: "http://api.test", jobId: "j", getToken: async () => "t", fetch: script.fetch });
    const end = await stream.finished;
    expect((end as { error: unknown }).error).toBeInstanceOf(ProtocolError);
    expect(script.requests).toHaveLength(1);
  });

  it("unknown events are ignored; a callback that throws ends the stream with that error", async () => {
    const script = scripted([
      sse('event: future\ndata: {}\n\nid: 1-0\nevent: log\ndata: {"id":"1-0","ts":"","source":"stdout","text":"a","phase":""}\n\n'),
    ]);
    const boom = new Error("boom");
    const stream = streamJobLogs({
      baseUrl: "http://api.test",
      jobId: "j",
      getToken: async () => "t",
      fetch: script.fetch,
      onLog: () => {
        throw boom;
      },
    });
    expect(await stream.finished).toEqual({ reason: "error", error: boom });
    expect(stream.status).toBe("closed");
  });
});
