import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type BuildlogsError, type StreamErrorInfo, streamJobLogs, TooManyRequestsError } from "../src/index.js";
import { countingFetch, type Stack, startStack } from "./support/stack.js";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ MAX_STREAMS_PER_USER: "1" });
});
afterAll(async () => {
  await stack?.stop();
});

describe("429 too_many_streams", () => {
  it("is retried after Retry-After, not before, and then streams", async () => {
    const jobA = await stack.newJob({ status: "code" });
    const jobB = await stack.newJob({ status: "code" });
    const first = streamJobLogs({ baseUrl: stack.baseUrl, jobId: jobA, getToken: async () => stack.token() });
    await first.started;

    const counter = countingFetch();
    const errors: { error: BuildlogsError; info: StreamErrorInfo }[] = [];
    const lines: string[] = [];
    const second = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: jobB,
      getToken: async () => stack.token(),
      fetch: counter.fetch,
      backoff: { initialDelayMs: 50 },
      onError: (error, info) => {
        errors.push({ error, info });
        // The cap frees once the first stream is gone.
        first.close();
      },
      onLog: (line) => lines.push(line.text),
    });
    await second.started;
    expect(errors).toHaveLength(1);
    const { error, info } = errors[0]!;
    expect(error).toBeInstanceOf(TooManyRequestsError);
    expect(error.status).toBe(429);
    expect(error.code).toBe("too_many_streams");
    expect(error.retryAfterMs).toBeGreaterThan(0);
    expect(info.willRetry).toBe(true);
    expect(info.delayMs).toBeGreaterThanOrEqual(error.retryAfterMs!);
    expect(counter.requests).toHaveLength(2);
    expect(counter.requests[1]!.at - counter.requests[0]!.at).toBeGreaterThanOrEqual(error.retryAfterMs!);

    await stack.runner.appendMany(jobB, 3, "b");
    await stack.runner.setStatus(jobB, "ready");
    expect(await second.finished).toEqual({ reason: "done", status: "ready" });
    expect(lines).toEqual(["b 1", "b 2", "b 3"]);
    expect(await first.finished).toEqual({ reason: "aborted" });
  });
});
