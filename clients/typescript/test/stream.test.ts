import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from "vitest";

import {
  BadRequestError,
  BuildlogsError,
  type components,
  createBuildlogsClient,
  jobLogEvents,
  type LogLine,
  type LogStreamEvent,
  NotFoundError,
  type StreamStatus,
  streamJobLogs,
  UnauthorizedError,
} from "../src/index.js";
import { waitFor } from "./support/ports.js";
import { openStreams } from "./support/server.js";
import { countingFetch, OTHER_USER, type Stack, startStack } from "./support/stack.js";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ HEARTBEAT_SECS: "1" });
});
afterAll(async () => {
  await stack?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("streamJobLogs", () => {
  it("streams a live job to done with typed callbacks", async () => {
    const job = await stack.newJob({ status: "code" });
    const lines: LogLine[] = [];
    const statuses: StreamStatus[] = [];
    const starts: { data: components["schemas"]["StartData"]; id: string }[] = [];
    let done: components["schemas"]["DoneData"] | undefined;
    const stream = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      onStart: (data, id) => {
        expectTypeOf(data).toEqualTypeOf<components["schemas"]["StartData"]>();
        starts.push({ data, id });
      },
      onLog: (line) => {
        expectTypeOf(line).toEqualTypeOf<components["schemas"]["LogLine"]>();
        lines.push(line);
      },
      onDone: (data) => {
        expectTypeOf(data).toEqualTypeOf<components["schemas"]["DoneData"]>();
        done = data;
      },
      onStatusChange: (s) => statuses.push(s),
    });
    const start = await stream.started;
    expect(start.status).toBe("code");
    expect(stream.historyCursor).toBe(start.history_cursor);
    const ids = await stack.runner.appendMany(job, 30, "live", 5);
    await stack.runner.setStatus(job, "ready", "Build succeeded");
    const end = await stream.finished;
    expect(end).toEqual({ reason: "done", status: "ready" });
    expect(done).toEqual({ status: "ready" });
    expect(lines.map((l) => l.id)).toEqual(ids);
    expect(lines.map((l) => l.text)).toEqual(ids.map((_, i) => `live ${i + 1}`));
    expect(starts).toHaveLength(1);
    expect(starts[0]!.id).toBe("0-0"); // nothing was written before the stream started
    expect(statuses).toEqual(["connecting", "open", "closed"]);
    expect(stream.status).toBe("closed");
    expect(stream.lastEventId).toBe(ids.at(-1));
  });

  it("history above a live view meets it with no gap and no duplicate", async () => {
    const job = await stack.newJob({ status: "deps" });
    await stack.runner.appendMany(job, 120, "before");
    const live: LogLine[] = [];
    const stream = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      onLog: (line) => live.push(line),
    });
    // Asked for before the stream started: the pager waits for the start event's cursor.
    const pager = stream.historyPager({ limit: 50 });
    const firstPage = pager.loadEarlier();
    await stream.started;
    await stack.runner.appendMany(job, 40, "after", 2);
    await stack.runner.setStatus(job, "failed", "Build failed");
    expect(await stream.finished).toEqual({ reason: "done", status: "failed" });

    const history: LogLine[] = [...(await firstPage)];
    while (pager.hasMore) history.unshift(...(await pager.loadEarlier()));
    const shown = [...history, ...live].map((l) => l.id);
    expect(shown).toEqual(await stack.runner.allIds(job));
    expect(new Set(shown).size).toBe(160);
    expect(history.at(-1)!.text).toBe("before 120");
    expect(live[0]!.text).toBe("after 1");
  });

  it("a finished job: start then done at once; resuming after the end is a 204 (ended)", async () => {
    const job = await stack.newJob();
    const ids = await stack.runner.appendMany(job, 5);
    await stack.runner.setStatus(job, "ready");
    const seen: string[] = [];
    const first = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      onStart: (_, id) => seen.push(`start ${id}`),
      onLog: (line) => seen.push(line.id),
    });
    expect(await first.finished).toEqual({ reason: "done", status: "ready" });
    expect(seen).toEqual([`start ${ids[4]}`]);

    const counter = countingFetch();
    const resumed = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      lastEventId: ids[4],
      fetch: counter.fetch,
      onLog: () => seen.push("unexpected"),
    });
    expect(await resumed.finished).toEqual({ reason: "ended" });
    expect(counter.requests).toHaveLength(1);
    expect(counter.requests[0]!.headers.get("last-event-id")).toBe(ids[4]);
    await expect(resumed.started).rejects.toThrow(/ended/);

    // Resuming from an earlier line replays the rest, then done.
    const rest: string[] = [];
    const partial = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      lastEventId: ids[1],
      onLog: (line) => rest.push(line.id),
    });
    expect(await partial.finished).toEqual({ reason: "done", status: "ready" });
    expect(rest).toEqual(ids.slice(2));
  });

  it("sends heartbeats on a quiet stream", async () => {
    const job = await stack.newJob({ status: "checks" });
    let heartbeats = 0;
    const stream = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      heartbeatIntervalMs: 1000,
      onHeartbeat: (data) => {
        expectTypeOf(data).toEqualTypeOf<components["schemas"]["HeartbeatData"]>();
        expect(data).toEqual({});
        heartbeats += 1;
      },
    });
    await waitFor("two heartbeats", () => heartbeats >= 2 || undefined, 5_000);
    stream.close();
    expect(await stream.finished).toEqual({ reason: "aborted" });
  });

  it("abort stops the stream at once: no callback after it, the server slot is released", async () => {
    const job = await stack.newJob({ status: "code" });
    const controller = new AbortController();
    const lines: string[] = [];
    let afterAbort = 0;
    const stream = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      signal: controller.signal,
      onLog: (line) => {
        if (controller.signal.aborted) afterAbort += 1;
        lines.push(line.id);
        if (lines.length === 10) controller.abort();
      },
    });
    await stream.started;
    expect(await openStreams(stack.baseUrl)).toBeGreaterThanOrEqual(1);
    const writing = stack.runner.appendMany(job, 40, "x", 2);
    expect(await stream.finished).toEqual({ reason: "aborted" });
    await writing;
    await sleep(200);
    expect(lines).toHaveLength(10);
    expect(afterAbort).toBe(0);
    expect(stream.status).toBe("closed");
    await waitFor("the server to release the stream", async () => (await openStreams(stack.baseUrl)) === 0 || undefined, 3_000);
  });

  it("an already aborted signal makes no request", async () => {
    const counter = countingFetch();
    const controller = new AbortController();
    controller.abort();
    const stream = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: "whatever",
      getToken: async () => stack.token(),
      signal: controller.signal,
      fetch: counter.fetch,
    });
    expect(await stream.finished).toEqual({ reason: "aborted" });
    expect(counter.requests).toHaveLength(0);
  });

  it("abort during a reconnect wait ends it promptly", async () => {
    const controller = new AbortController();
    const errors: BuildlogsError[] = [];
    const stream = streamJobLogs({
      baseUrl: "http://127.0.0.1:1", // nothing listens there: a network error, retried
      jobId: "job",
      getToken: async () => stack.token(),
      signal: controller.signal,
      backoff: { initialDelayMs: 60_000 },
      onError: (error, info) => {
        errors.push(error);
        expect(info.willRetry).toBe(true);
        setTimeout(() => controller.abort(), 50);
      },
    });
    const started = Date.now();
    expect(await stream.finished).toEqual({ reason: "aborted" });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.kind).toBe("network");
  });
});

describe("errors without retry loops", () => {
  async function expectFinal(
    jobId: string,
    token: string | null,
    errorClass: abstract new (...args: never[]) => BuildlogsError,
    code: string,
    lastEventId?: string,
  ) {
    const counter = countingFetch();
    const reported: { error: BuildlogsError; willRetry: boolean }[] = [];
    let tokens = 0;
    const stream = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId,
      lastEventId,
      getToken: async () => {
        tokens += 1;
        return token;
      },
      fetch: counter.fetch,
      backoff: { initialDelayMs: 10 },
      onError: (error, info) => reported.push({ error, willRetry: info.willRetry }),
      onLog: () => {
        throw new Error("no line expected");
      },
    });
    const end = await stream.finished;
    expect(end.reason).toBe("error");
    const error = (end as { error: unknown }).error;
    expect(error).toBeInstanceOf(errorClass);
    expect((error as BuildlogsError).code).toBe(code);
    expect((error as BuildlogsError).problem?.code).toBe(code);
    await expect(stream.started).rejects.toBe(error);
    expect(reported).toEqual([{ error, willRetry: false }]);
    // Nothing more happens later either.
    await sleep(300);
    expect(counter.requests).toHaveLength(1);
    expect(tokens).toBe(1);
    expect(stream.status).toBe("closed");
  }

  it("401 for a forged token", async () => {
    const job = await stack.newJob();
    await expectFinal(job, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", UnauthorizedError, "unauthorized");
  });

  it("401 for no token", async () => {
    const job = await stack.newJob();
    await expectFinal(job, null, UnauthorizedError, "unauthorized");
  });

  it("404 for a missing job", async () => {
    await expectFinal("no-such-job", stack.token(), NotFoundError, "job_not_found");
  });

  it("404 for someone else's job", async () => {
    const job = await stack.newJob({ user: OTHER_USER });
    await expectFinal(job, stack.token(), NotFoundError, "job_not_found");
  });

  it("400 for a malformed Last-Event-ID", async () => {
    const job = await stack.newJob();
    await expectFinal(job, stack.token(), BadRequestError, "invalid_cursor", "12345");
  });

  it("the async iterator throws the typed error", async () => {
    const client = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: async () => "garbage" });
    const iterate = async () => {
      for await (const event of client.jobLogEvents("anything")) void event;
    };
    await expect(iterate()).rejects.toBeInstanceOf(UnauthorizedError);
  });
});

describe("jobLogEvents (async iterator)", () => {
  it("yields typed events until done; breaking out closes the connection", async () => {
    const job = await stack.newJob({ status: "code" });
    const client = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: async () => stack.token() });
    const events: LogStreamEvent[] = [];
    let ids: string[] = [];
    for await (const event of client.jobLogEvents(job)) {
      events.push(event);
      if (event.type === "start") {
        expectTypeOf(event.data).toEqualTypeOf<components["schemas"]["StartData"]>();
        void (async () => {
          ids = await stack.runner.appendMany(job, 8, "it", 2);
          await stack.runner.setStatus(job, "ready");
        })();
      }
      if (event.type === "log") expectTypeOf(event.data).toEqualTypeOf<components["schemas"]["LogLine"]>();
    }
    const kinds = events.filter((e) => e.type !== "heartbeat").map((e) => e.type);
    expect(kinds).toEqual(["start", ...Array(8).fill("log"), "done"]);
    expect(events.flatMap((e) => (e.type === "log" ? [e.id] : []))).toEqual(ids);

    // break after the first line: the server sees the stream go away
    const other = await stack.newJob({ status: "code" });
    const writer = stack.runner.appendMany(other, 20, "b", 5);
    for await (const event of jobLogEvents({ baseUrl: stack.baseUrl, jobId: other, getToken: () => stack.token() })) {
      if (event.type === "log") break;
    }
    await writer;
    await waitFor("the stream to be released", async () => (await openStreams(stack.baseUrl)) === 0 || undefined, 3_000);
  });
});
