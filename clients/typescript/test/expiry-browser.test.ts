// Issue #12 in headless Chromium: short-lived tokens (2-3 s, no server leeway), a line every 50 ms
// for 20 s. The client library on Bearer tokens, and a plain EventSource on the `__session`
// cookie: every line once, in order, with no gap over a second across every expiry. And what a
// page on another origin can read of a download (the headers CORS must expose).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, it } from "vitest";

import { tokenExpiry } from "../src/token.js";
import { type Browser, launchChromium } from "./support/browser.js";
import { type Stack, startStack, USER } from "./support/stack.js";
import { serveStatic } from "./support/static.js";
import { longestGap } from "./support/watch.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const LINES = 400; // 20 s at 50 ms a line
const TOKEN_SECS = 3; // exp is whole seconds: a token lives 2-3 s

let stack: Stack;
let browser: Browser;
let site: Awaited<ReturnType<typeof serveStatic>>;
let siteDir: string;

beforeAll(async () => {
  // The client's page is served from another origin than the API, as in most deployments.
  siteDir = mkdtempSync(join(tmpdir(), "buildlogs-expiry-site-"));
  await build({
    entryPoints: [join(root, "src", "index.ts")],
    outfile: join(siteDir, "client.js"),
    bundle: true,
    format: "iife",
    globalName: "buildlogs",
    platform: "browser",
    target: "es2022",
    logLevel: "warning",
  });
  writeFileSync(
    join(siteDir, "index.html"),
    '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script src="client.js"></script>',
  );
  site = await serveStatic(siteDir);
  [stack, browser] = await Promise.all([
    startStack({ JWT_LEEWAY_SECS: "0", CORS_ALLOWED_ORIGINS: site.origin }),
    launchChromium(),
  ]);
});
afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  await site?.close();
  if (siteDir) rmSync(siteDir, { recursive: true, force: true });
});

interface SeenRequest {
  at: number;
  /** How the request authenticated. */
  via: "bearer" | "cookie" | "none";
  /** Its token's `exp`, in ms. */
  expiresAt: number | undefined;
  lastEventId: string | undefined;
}

/** Records the page's stream GETs (not preflights): when, which token, which Last-Event-ID. */
function recordStreamRequests(page: Page): () => Promise<SeenRequest[]> {
  const requests: Promise<SeenRequest>[] = [];
  page.on("request", (request) => {
    if (request.method() !== "GET" || !request.url().endsWith("/logs/stream")) return;
    const at = Date.now();
    requests.push(
      request.allHeaders().then((headers) => {
        const bearer = /^Bearer (.+)$/.exec(headers.authorization ?? "")?.[1];
        const cookie = /(?:^|;\s*)__session=([^;]+)/.exec(headers.cookie ?? "")?.[1];
        return {
          at,
          via: bearer ? "bearer" : cookie ? "cookie" : "none",
          expiresAt: tokenExpiry(bearer ?? cookie)?.expiresAt,
          lastEventId: headers["last-event-id"],
        };
      }),
    );
  });
  return () => Promise.all(requests);
}

declare global {
  interface Window {
    buildlogs: typeof import("../src/index.js");
    mintToken(): Promise<string>;
    seen: {
      lines: { id: string; text: string; at: number }[];
      errors: string[];
      statuses: string[];
      opens: number;
      done: boolean;
    };
  }
}

describe.concurrent("token expiry in headless Chromium (real server, 2-3 s tokens, no leeway)", () => {
  it("the client library renews before each expiry: every line once, in order, no error, no gap", { timeout: 60_000 }, async ({ expect }) => {
    const job = await stack.newJob({ status: "code" });
    const page = await browser.context.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await page.exposeFunction("mintToken", () => stack.token(USER, { ttlSecs: TOKEN_SECS }));
    const streamRequests = recordStreamRequests(page);
    await page.goto(`${site.origin}/index.html`);
    await page.evaluate(
      async ({ baseUrl, jobId }) => {
        const seen: Window["seen"] = { lines: [], errors: [], statuses: [], opens: 0, done: false };
        window.seen = seen;
        const stream = window.buildlogs.streamJobLogs({
          baseUrl,
          jobId,
          getToken: () => window.mintToken(),
          onLog: (line) => seen.lines.push({ id: line.id, text: line.text, at: performance.now() }),
          onError: (error, info) => seen.errors.push(`${error.kind} ${error.message} willRetry=${info.willRetry}`),
          onStatusChange: (status) => seen.statuses.push(status),
        });
        void stream.finished.then(() => {
          seen.done = true;
        });
        await stream.started;
      },
      { baseUrl: stack.baseUrl, jobId: job },
    );
    const ids = await stack.runner.appendMany(job, LINES, "line", 50);
    await stack.runner.setStatus(job, "ready");
    await page.waitForFunction(() => window.seen.done, null, { timeout: 10_000 });
    const endedAt = Date.now();
    const seen = await page.evaluate(() => window.seen);

    expect(seen.lines.map((l) => l.id)).toEqual(ids);
    expect(seen.lines.map((l) => l.text)).toEqual(ids.map((_, i) => `line ${i + 1}`));
    expect(seen.errors).toEqual([]);
    expect(seen.statuses).toEqual(["connecting", "open", "closed"]);
    expect(longestGap(seen.lines.map((l) => l.at))).toBeLessThan(1000);
    const requests = await streamRequests();
    expect(requests.filter((r) => r.expiresAt !== undefined && r.expiresAt <= endedAt).length).toBeGreaterThanOrEqual(3);
    expect(requests.every((r) => r.via === "bearer")).toBe(true);
    for (let i = 1; i < requests.length; i++) {
      // Each next connection: a later token, the last id, sent before the previous token expired.
      expect(requests[i]!.expiresAt!).toBeGreaterThan(requests[i - 1]!.expiresAt!);
      expect(requests[i]!.at).toBeLessThan(requests[i - 1]!.expiresAt!);
      expect(requests[i]!.lastEventId).toMatch(/^\d+-\d+$/);
    }
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it("a native EventSource on the __session cookie is back within a second of each cut", { timeout: 60_000 }, async ({ expect }) => {
    const job = await stack.newJob({ status: "code" });
    const page = await browser.context.newPage();
    // Same origin as the API, so the cookie goes with the EventSource's requests.
    await page.goto(`${stack.baseUrl}/healthz`);
    const streamRequests = recordStreamRequests(page);
    const statuses: number[] = [];
    page.on("response", (response) => {
      if (response.url().endsWith("/logs/stream")) statuses.push(response.status());
    });
    // Clerk refreshes __session well before it expires; so does this, four times a second (a
    // loaded machine can delay a refresh by a second or more, and a reconnect on an expired
    // cookie is a 401 that ends a native EventSource for good).
    const setCookie = () =>
      browser.context.addCookies([
        { name: "__session", value: stack.token(USER, { ttlSecs: TOKEN_SECS }), url: stack.baseUrl },
      ]);
    await setCookie();
    const refresher = setInterval(() => void setCookie(), 250);
    try {
      await page.evaluate(
        (path) =>
          new Promise<void>((resolve) => {
            const seen: Window["seen"] = { lines: [], errors: [], statuses: [], opens: 0, done: false };
            window.seen = seen;
            const source = new EventSource(path);
            source.addEventListener("open", () => {
              seen.opens += 1;
            });
            source.addEventListener("error", () => {
              seen.errors.push(`error, readyState ${source.readyState}`);
            });
            source.addEventListener("start", () => resolve(), { once: true });
            source.addEventListener("log", (event) => {
              const line = JSON.parse((event as MessageEvent<string>).data) as { id: string; text: string };
              seen.lines.push({ id: line.id, text: line.text, at: performance.now() });
            });
            source.addEventListener("done", () => {
              seen.done = true;
              source.close();
            });
          }),
        `/api/jobs/${job}/logs/stream`,
      );
      const ids = await stack.runner.appendMany(job, LINES, "line", 50);
      await stack.runner.setStatus(job, "ready");
      await page.waitForFunction(() => window.seen.done, null, { timeout: 10_000 }).catch(async (e: unknown) => {
        const seen = await page.evaluate(() => ({ ...window.seen, lines: window.seen.lines.length }));
        throw new Error(`no done: ${JSON.stringify({ seen, statuses })}`, { cause: e });
      });
      const endedAt = Date.now();
      const seen = await page.evaluate(() => window.seen);
      expect(statuses.every((s) => s === 200)).toBe(true);

      expect(seen.lines.map((l) => l.id)).toEqual(ids);
      expect(longestGap(seen.lines.map((l) => l.at))).toBeLessThan(1000);
      // At least three cuts, each followed by a reconnect (an error event, then open again)...
      expect(seen.opens).toBeGreaterThanOrEqual(4);
      expect(seen.errors).toEqual(Array(seen.opens - 1).fill("error, readyState 0"));
      const requests = await streamRequests();
      expect(requests).toHaveLength(seen.opens);
      expect(requests.every((r) => r.via === "cookie")).toBe(true);
      expect(requests.filter((r) => r.expiresAt! <= endedAt).length).toBeGreaterThanOrEqual(3);
      // ...each at its cookie's expiry, and the browser back within a second with Last-Event-ID.
      for (let i = 1; i < requests.length; i++) {
        const cutAt = requests[i - 1]!.expiresAt!;
        expect(requests[i]!.at).toBeGreaterThanOrEqual(cutAt - 50);
        expect(requests[i]!.at - cutAt).toBeLessThan(1000);
        expect(requests[i]!.lastEventId).toMatch(/^\d+-\d+$/);
      }
    } finally {
      clearInterval(refresher);
      await page.close();
    }
  });
});

describe("a download from a page on another origin (headless Chromium, CORS)", () => {
  it("reads the body and the headers that describe it: file name, last line, trimmed start", { timeout: 30_000 }, async ({ expect }) => {
    const job = await stack.newJob({ status: "code" });
    const ids = await stack.runner.appendMany(job, 30, "line");
    await stack.redis.client.sendCommand(["XTRIM", `job:${job}:logs`, "MAXLEN", "=", "20"]);
    const page = await browser.context.newPage();
    await page.exposeFunction("mintToken", () => stack.token(USER));
    await page.goto(`${site.origin}/index.html`);
    const got = await page.evaluate(
      async ({ baseUrl, jobId }) => {
        const client = window.buildlogs.createBuildlogsClient({ baseUrl, getToken: () => window.mintToken() });
        const download = await client.downloadLog(jobId);
        return {
          origin: location.origin,
          filename: download.filename,
          lastId: download.lastId,
          truncated: download.truncated,
          text: await download.text(),
        };
      },
      { baseUrl: stack.baseUrl, jobId: job },
    );
    await page.close();
    expect(got.origin).not.toBe(new URL(stack.baseUrl).origin);
    expect(got.text.split("\n").filter(Boolean)).toHaveLength(20);
    // Without these in Access-Control-Expose-Headers the browser hides them: null and false.
    expect(got.lastId).toBe(ids.at(-1));
    expect(got.truncated).toBe(true);
    expect(got.filename).toBe(`${job}.log`);
  });
});
