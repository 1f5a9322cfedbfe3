import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type BuildlogsError, type LogLine, type StreamErrorInfo, streamJobLogs } from "../src/index.js";
import { waitFor } from "./support/ports.js";
import { type BreakableProxy, startProxy } from "./support/proxy.js";
import { type Stack, startStack } from "./support/stack.js";

let stack: Stack;
let proxy: BreakableProxy;

beforeAll(async () => {
  // No leeway, so that a token's expiry ends a stream right at `exp` (within a second).
  stack = await startStack({ HEARTBEAT_SECS: "1", JWT_LEEWAY_SECS: "0" });
  proxy = await startProxy(stack.baseUrl);
});
afterAll(async () => {
  await proxy?.close();
  await stack?.stop();
});

/**
 * Streams a live job through the proxy while the runner writes `total` lines; `breakAt` lines in,
 * `breakIt` breaks the connection. The job then turns ready. Checks that the lines shown (history
 * above the first start, then live) are exactly the stream's lines: none lost, none repeated.
 */
async function survives(
  breakIt: () => void,
  options: {
    total?: number;
    heartbeatIntervalMs?: number;
    baseUrl?: string;
    getToken?: () => Promise<string>;
    renewBeforeExpiryMs?: false;
    /** Whether the break is a failure the client reports (default true; a token expiry is not). */
    reported?: boolean;
  } = {},
) {
  const total = options.total ?? 80;
  const breakAt = 20;
  const job = await stack.newJob({ status: "code" });
  await stack.runner.appendMany(job, 15, "earlier");
  const requestsBefore = proxy.requests.length;
  const live: LogLine[] = [];
  const errors: { error: BuildlogsError; info: StreamErrorInfo }[] = [];
  let tokenCalls = 0;
  let broken = false;
  let idBeforeBreak: string | undefined;
  const stream = streamJobLogs({
    baseUrl: options.baseUrl ?? proxy.baseUrl,
    jobId: job,
    getToken: async () => {
      tokenCalls += 1;
      return options.getToken ? options.getToken() : stack.token();
    },
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 20_000,
    backoff: { initialDelayMs: 100 },
    ...(options.renewBeforeExpiryMs === false ? { renewBeforeExpiryMs: false } : {}),
    onLog: (line) => {
      live.push(line);
      if (live.length === breakAt && !broken) {
        broken = true;
        idBeforeBreak = line.id;
        breakIt();
      }
    },
    onError: (error, info) => errors.push({ error, info }),
  });
  await stream.started;
  await stack.runner.appendMany(job, total, "live", 10);
  await stack.runner.setStatus(job, "ready");
  const end = await stream.finished;
  expect(end).toEqual({ reason: "done", status: "ready" });
  const streamTokenCalls = tokenCalls;
  const streamRequests = proxy.requests.slice(requestsBefore).filter((r) => r.url.endsWith("/stream"));

  const pager = stream.historyPager({ limit: 7 });
  const history: LogLine[] = [];
  while (pager.hasMore) history.unshift(...(await pager.loadEarlier()));
  const all = await stack.runner.allIds(job);
  expect(history.map((l) => l.text)).toEqual(Array.from({ length: 15 }, (_, i) => `earlier ${i + 1}`));
  expect(live.map((l) => l.text)).toEqual(Array.from({ length: total }, (_, i) => `live ${i + 1}`));
  expect([...history, ...live].map((l) => l.id)).toEqual(all);
  if (options.reported ?? true) expect(errors.length).toBeGreaterThanOrEqual(1);
  else expect(errors).toEqual([]);
  expect(errors.every((e) => e.info.willRetry)).toBe(true);
  expect(streamTokenCalls).toBe(streamRequests.length || errors.length + 1); // a fresh token per connect
  expect(streamTokenCalls).toBeGreaterThanOrEqual(2);
  return { errors, idBeforeBreak, requests: streamRequests, tokenCalls: streamTokenCalls };
}

describe("resume", () => {
  it("after the connection is dropped mid-stream: Last-Event-ID, no line lost or repeated", async () => {
    const { requests, idBeforeBreak, errors } = await survives(() => proxy.drop());
    expect(requests).toHaveLength(2);
    expect(requests[0]!.headers["last-event-id"]).toBeUndefined();
    expect(requests[1]!.headers["last-event-id"]).toBe(idBeforeBreak);
    expect(errors[0]!.error.kind).toBe("network");
  });

  it("after the server closes the stream before done for another reason than expiry (as on shutdown)", async () => {
    // The token is good for 10 minutes and no short retry came: honour the server's retry, report it.
    const { requests, idBeforeBreak, errors } = await survives(() => proxy.endCleanly());
    expect(requests).toHaveLength(2);
    expect(requests[1]!.headers["last-event-id"]).toBe(idBeforeBreak);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.error.message).toMatch(/closed before done/);
    expect(errors[0]!.info.delayMs).toBeGreaterThanOrEqual(50); // backoff (initialDelayMs 100, jitter)
    expect(requests[1]!.at - requests[0]!.at).toBeGreaterThanOrEqual(errors[0]!.info.delayMs!);
  });

  it("after a stall: heartbeat liveness replaces a silent connection", async () => {
    const started = Date.now();
    const { requests, errors } = await survives(() => proxy.stall(), { heartbeatIntervalMs: 1000 });
    expect(requests.length).toBeGreaterThanOrEqual(2);
    expect(errors[0]!.error.message).toMatch(/no data for 2500 ms/);
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it("across a real token expiry: a fresh token takes over before the first one expires, unreported", async () => {
    const tokens: string[] = [];
    const { tokenCalls, requests } = await survives(() => undefined, {
      baseUrl: proxy.baseUrl,
      total: 400, // ~4-5 s of output at 10 ms a line, well past the first token's expiry
      reported: false,
      getToken: async () => {
        // The first token expires in 1-2 s; the next ones are good for long.
        const token = tokens.length === 0 ? stack.token(undefined, { ttlSecs: 2 }) : stack.token();
        tokens.push(token);
        return token;
      },
    });
    expect(tokenCalls).toBe(2);
    expect(new Set(tokens.slice(0, 2)).size).toBe(2); // later ones are the pager's
    expect(requests).toHaveLength(2);
    expect(requests[1]!.headers.authorization).toBe(`Bearer ${tokens[1]}`);
    expect(requests[1]!.headers["last-event-id"]).toMatch(/^\d+-\d+$/);
  });

  it("across a real token expiry without renewal: the server ends the stream, a fresh token resumes it at once", async () => {
    const tokens: string[] = [];
    const { tokenCalls, requests } = await survives(() => undefined, {
      baseUrl: proxy.baseUrl,
      total: 400,
      reported: false,
      renewBeforeExpiryMs: false,
      getToken: async () => {
        const token = tokens.length === 0 ? stack.token(undefined, { ttlSecs: 2 }) : stack.token();
        tokens.push(token);
        return token;
      },
    });
    expect(tokenCalls).toBe(2);
    expect(requests).toHaveLength(2);
    const exp = JSON.parse(Buffer.from(tokens[0]!.split(".")[1]!, "base64url").toString()).exp * 1000;
    expect(requests[1]!.at).toBeGreaterThanOrEqual(exp - 50); // the server's cut, not a renewal
    expect(requests[1]!.at - exp).toBeLessThan(1000); // and no backoff after it
  });

  it("reset: a resume point that was trimmed away is reported, then every retained line follows", async () => {
    const job = await stack.newJob({ status: "code" });
    const ids = await stack.runner.appendMany(job, 30, "t");
    await stack.redis.client.sendCommand(["XTRIM", `job:${job}:logs`, "MAXLEN", "10"]);
    const resets: unknown[] = [];
    const lines: string[] = [];
    const stream = streamJobLogs({
      baseUrl: stack.baseUrl,
      jobId: job,
      getToken: async () => stack.token(),
      lastEventId: ids[5],
      onReset: (data) => resets.push(data),
      onLog: (line) => lines.push(line.id),
    });
    await waitFor("the retained lines", () => lines.length === 10 || undefined, 5_000);
    await stack.runner.setStatus(job, "ready");
    expect(await stream.finished).toEqual({ reason: "done", status: "ready" });
    expect(resets).toEqual([{ reason: "trimmed", oldest_id: ids[20] }]);
    expect(lines).toEqual(ids.slice(20));
  });
});
