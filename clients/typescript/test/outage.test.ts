import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  type BuildlogsError,
  createBuildlogsClient,
  type LogLine,
  ServiceUnavailableError,
  type StreamErrorInfo,
  streamJobLogs,
} from "../src/index.js";
import { waitFor } from "./support/ports.js";
import { type BreakableProxy, startProxy } from "./support/proxy.js";
import { countingFetch, type Stack, startStack } from "./support/stack.js";

let stack: Stack;
let proxy: BreakableProxy;

beforeAll(async () => {
  stack = await startStack();
  proxy = await startProxy(stack.baseUrl);
});
afterAll(async () => {
  await proxy?.close();
  await stack?.stop();
});

describe("store outage (503 store_unavailable)", () => {
  it("history: a typed ServiceUnavailableError with Retry-After; the stream waits it out and loses nothing", async () => {
    const job = await stack.newJob({ status: "code" });
    const lines: LogLine[] = [];
    const errors: { error: BuildlogsError; info: StreamErrorInfo }[] = [];
    const stream = streamJobLogs({
      baseUrl: proxy.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      backoff: { initialDelayMs: 100 },
      onLog: (line) => lines.push(line),
      onError: (error, info) => errors.push({ error, info }),
    });
    await stream.started;
    const first = await stack.runner.appendMany(job, 5, "up");
    await waitFor("the first lines", () => lines.length === 5 || undefined);

    await stack.redis.kill();
    const counter = countingFetch();
    const client = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: async () => stack.token(), fetch: counter.fetch });
    const error = await client.getHistoryPage(job).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ServiceUnavailableError);
    expect((error as ServiceUnavailableError).code).toBe("store_unavailable");
    expect((error as ServiceUnavailableError).status).toBe(503);
    expect((error as ServiceUnavailableError).retryAfterMs).toBeGreaterThan(0);
    expect((error as ServiceUnavailableError).retryable).toBe(true);
    expect(counter.requests).toHaveLength(1);

    // Break the stream while the store is down: the reconnect meets 503s and waits them out.
    proxy.drop();
    await waitFor("a 503 on reconnect", () => errors.some((e) => e.error.kind === "unavailable") || undefined, 10_000);
    await stack.redis.restart();
    const second = await stack.runner.appendMany(job, 5, "back");
    await stack.runner.setStatus(job, "ready");
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });

    expect(lines.map((l) => l.id)).toEqual([...first, ...second]);
    const unavailable = errors.filter((e) => e.error.kind === "unavailable");
    for (const { error: e, info } of unavailable) {
      expect(info.willRetry).toBe(true);
      expect(info.delayMs).toBeGreaterThanOrEqual(e.retryAfterMs ?? 2_000);
    }
  });
});
