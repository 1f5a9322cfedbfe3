// Issue #12: short-lived tokens are routine. Tokens live 2-3 s here, the server has no leeway, and
// the runner writes a line every 50 ms for 20 s: the viewer must see every line once, in order,
// with no error, no status flicker and no gap over a second, across every expiry.
import { afterAll, beforeAll, describe, it } from "vitest";

import { streamJobLogs } from "../src/index.js";
import { freePort } from "./support/ports.js";
import { startServer } from "./support/server.js";
import { type Stack, startStack, USER } from "./support/stack.js";
import { longestGap, streamRecordingFetch, watcher } from "./support/watch.js";

let stack: Stack;

beforeAll(async () => {
  // No leeway: a stream ends right at its token's exp.
  stack = await startStack({ JWT_LEEWAY_SECS: "0" });
});
afterAll(async () => {
  await stack?.stop();
});

const LINES = 400; // 20 s at 50 ms a line
const TOKEN_SECS = 3; // exp is whole seconds: a token lives 2-3 s

async function watchThroughExpiries(renewBeforeExpiryMs?: false) {
  const job = await stack.newJob({ status: "code" });
  const recorder = streamRecordingFetch();
  const { watched, callbacks } = watcher();
  const stream = streamJobLogs({
    baseUrl: stack.baseUrl,
    jobId: job,
    // As Clerk's getToken does near expiry: a new token each time.
    getToken: async () => stack.token(USER, { ttlSecs: TOKEN_SECS }),
    fetch: recorder.fetch,
    ...(renewBeforeExpiryMs === false ? { renewBeforeExpiryMs } : {}),
    ...callbacks,
  });
  await stream.started;
  const ids = await stack.runner.appendMany(job, LINES, "line", 50);
  await stack.runner.setStatus(job, "ready");
  const end = await stream.finished;
  return { ids, end, watched, requests: recorder.requests, endedAt: Date.now(), stream };
}

describe.concurrent("a stream across token expiries (real server, 2-3 s tokens, no leeway)", () => {
  it("renews before each expiry: every line once and in order, no error, status stays open, no gap", { timeout: 60_000 }, async ({ expect }) => {
    const { ids, end, watched, requests, endedAt } = await watchThroughExpiries();
    expect(end).toEqual({ reason: "done", status: "ready" });
    expect(watched.lines.map((l) => l.id)).toEqual(ids);
    expect(watched.lines.map((l) => l.text)).toEqual(ids.map((_, i) => `line ${i + 1}`));
    expect(watched.errors).toEqual([]);
    expect(watched.statuses).toEqual(["connecting", "open", "closed"]);
    expect(longestGap(watched.lines.map((l) => l.at))).toBeLessThan(1000);

    // At least three tokens expired while the stream ran...
    const expired = requests.filter((r) => r.expiresAt !== undefined && r.expiresAt <= endedAt);
    expect(expired.length).toBeGreaterThanOrEqual(3);
    // ...and each time the next connection was opened with a later token and the last line's id
    // before the old one expired, and the old one was let go once the new one had started.
    for (let i = 1; i < requests.length; i++) {
      const previous = requests[i - 1]!;
      const next = requests[i]!;
      expect(next.expiresAt!).toBeGreaterThan(previous.expiresAt!);
      expect(next.at).toBeLessThan(previous.expiresAt!);
      expect(next.lastEventId).toMatch(/^\d+-\d+$/);
      expect(previous.closedAt).toBeDefined();
      expect(previous.closedAt!).toBeGreaterThanOrEqual(next.at);
      expect(previous.closedAt!).toBeLessThanOrEqual(previous.expiresAt!);
    }
    // Never more than two connections at once.
    for (let i = 2; i < requests.length; i++) expect(requests[i - 2]!.closedAt!).toBeLessThanOrEqual(requests[i]!.at);
    // Each switch reports a start at the position delivery goes on from, with a matching cursor.
    // (A renewal begun as the job finished may end unused: the old connection delivered `done` first.)
    expect(watched.starts.length).toBeGreaterThanOrEqual(requests.length - 1);
    for (const start of watched.starts.slice(1)) {
      expect(ids).toContain(start.id);
      const [ms, seq] = start.id.split("-");
      expect(start.historyCursor).toBe(`${ms}-${BigInt(seq!) + 1n}`);
    }
  });

  it("without renewal (renewBeforeExpiryMs: false): the server's cut is resumed at once, unreported", { timeout: 60_000 }, async ({ expect }) => {
    const { ids, end, watched, requests, endedAt } = await watchThroughExpiries(false);
    expect(end).toEqual({ reason: "done", status: "ready" });
    expect(watched.lines.map((l) => l.id)).toEqual(ids);
    expect(watched.errors).toEqual([]);
    expect(watched.statuses).toEqual(["connecting", "open", "closed"]);
    expect(longestGap(watched.lines.map((l) => l.at))).toBeLessThan(1000);

    const cut = requests.filter((r) => r.expiresAt !== undefined && r.expiresAt <= endedAt);
    expect(cut.length).toBeGreaterThanOrEqual(3);
    // Each connection ran until the server ended it at its token's exp; the next one followed at once.
    for (let i = 1; i < requests.length; i++) {
      const previous = requests[i - 1]!;
      const next = requests[i]!;
      expect(next.at).toBeGreaterThanOrEqual(previous.expiresAt! - 50);
      expect(next.at - previous.expiresAt!).toBeLessThan(1000);
      expect(next.lastEventId).toMatch(/^\d+-\d+$/);
    }
  });

  it("a server shutdown is no expiry: the client honours the server's retry (3 s) and reports the drop", { timeout: 60_000 }, async ({ expect }) => {
    // A second instance on the same Redis, restarted on the same port.
    const port = await freePort();
    const env = { REDIS_URL: stack.redis.url, CLERK_JWT_KEY: stack.keys.publicPem, HEARTBEAT_SECS: "1" };
    let server = await startServer(env, [], port);
    try {
      const job = await stack.newJob({ status: "code" });
      const recorder = streamRecordingFetch();
      const { watched, callbacks } = watcher();
      const stream = streamJobLogs({
        baseUrl: server.baseUrl,
        jobId: job,
        getToken: async () => stack.token(USER, { ttlSecs: 600 }),
        fetch: recorder.fetch,
        ...callbacks,
      });
      await stream.started;
      const before = await stack.runner.appendMany(job, 5, "before");
      await expect.poll(() => watched.lines.length).toBe(5);
      const stoppedAt = Date.now();
      await server.stop(); // SIGTERM: open streams end cleanly, with no short retry
      server = await startServer(env, [], port);
      const after = await stack.runner.appendMany(job, 5, "after");
      await stack.runner.setStatus(job, "ready");
      expect(await stream.finished).toEqual({ reason: "done", status: "ready" });

      expect(watched.lines.map((l) => l.id)).toEqual([...before, ...after]);
      // Reported as a dropped connection (a refused reconnect, if the restart was slow, would be another).
      expect(watched.errors[0]).toEqual({ kind: "network", message: "the stream closed before done", willRetry: true });
      expect(watched.errors.every((e) => e.kind === "network" && e.willRetry)).toBe(true);
      expect(watched.statuses.slice(0, 3)).toEqual(["connecting", "open", "reconnecting"]);
      expect(watched.statuses.slice(-2)).toEqual(["open", "closed"]);
      // The server's retry: 3000 with jitter (half to all of it): a fleet does not come back at once.
      expect(recorder.requests[1]!.at - stoppedAt).toBeGreaterThanOrEqual(1_500);
      expect(recorder.requests.at(-1)!.lastEventId).toBe(before.at(-1));
    } finally {
      await server.stop();
    }
  });
});
