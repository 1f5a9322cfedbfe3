/**
 * The client package's test helpers (a real redis-server, the buildlogs binary, a fake job
 * runner, RS256 tokens, headless Chromium), shared rather than copied, and what the React tests
 * add: writing lines at a pace, and counting a job's open streams at the server.
 */
export { type Browser, CHROMIUM, launchChromium } from "../../typescript/test/support/browser.js";
export { waitFor } from "../../typescript/test/support/ports.js";
export { type BreakableProxy, startProxy } from "../../typescript/test/support/proxy.js";
export { openStreams, startServer, type BuildlogsServer } from "../../typescript/test/support/server.js";
export { countingFetch, type Stack, startStack, USER } from "../../typescript/test/support/stack.js";
export { serveStatic } from "../../typescript/test/support/static.js";

import type { Browser } from "../../typescript/test/support/browser.js";
import type { Stack } from "../../typescript/test/support/stack.js";

/** A page of the shared browser (playwright-core is the client package's). */
export type Page = Awaited<ReturnType<Browser["context"]["newPage"]>>;

/**
 * Writes `count` lines `${prefix} 1..count` at `perSecond`, in small pipelined batches every
 * 10 ms (as a busy runner does). Returns their ids in order.
 */
export async function writeAtRate(stack: Stack, job: string, count: number, perSecond: number, prefix = "line"): Promise<string[]> {
  const ids: string[] = [];
  const perTick = Math.max(1, Math.round(perSecond / 100));
  const started = performance.now();
  for (let written = 0; written < count; ) {
    const batch = Math.min(perTick, count - written);
    const next = written;
    // Concurrent commands on one client are pipelined; XADD order is the order they were sent.
    const sent = Array.from({ length: batch }, (_, i) => stack.runner.append(job, `${prefix} ${next + i + 1}`));
    ids.push(...(await Promise.all(sent)));
    written += batch;
    const due = started + (written / perSecond) * 1000;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  return ids;
}

/** Appends `count` lines as fast as Redis takes them (pipelined, 500 at a time). */
export async function writeMany(stack: Stack, job: string, count: number, prefix = "line"): Promise<void> {
  for (let start = 0; start < count; start += 500) {
    const n = Math.min(500, count - start);
    await Promise.all(Array.from({ length: n }, (_, i) => stack.runner.append(job, `${prefix} ${start + i + 1}`)));
  }
}
