/**
 * The viewer's performance, measured (never asserted in the test suite): headless Chromium on
 * `<BuildLog>` against the real binary and a real redis-server, printing one table.
 *
 * - history: a PERF_HISTORY_LINES-line log (100,000, written without the runner's trim so that
 *   all of them are retained) opened, then "Load earlier" page after page
 *   (500 lines each, `maxLines` raised to hold them all) up to its first line, scrolled to the
 *   top: the most rows the DOM held (target ≤ 200) and the longest task (target ≤ 50 ms).
 * - follow: a live job at PERF_RATE lines/s (1,000) for PERF_FOLLOW_SECS (30) with the default
 *   `maxLines`: the first line's paint after the stream opened (≤ 300 ms), long tasks (none over
 *   50 ms, PerformanceObserver `longtask`), the JS heap at the end after a GC (≤ 100 MB).
 *
 *   npm run perf                                          # the full run (about two minutes)
 *   PERF_HISTORY_LINES=5000 PERF_FOLLOW_SECS=3 npm run perf   # a quick check that it works
 */
import { afterAll, beforeAll, it } from "vitest";

import { pageUrl, serveFixturePage } from "../test/browser.js";
import { type Browser, launchChromium, type Page, type Stack, startStack, writeAtRate } from "../test/support.js";

const HISTORY_LINES = Number(process.env.PERF_HISTORY_LINES ?? 100_000);
const FOLLOW_SECS = Number(process.env.PERF_FOLLOW_SECS ?? 30);
const RATE = Number(process.env.PERF_RATE ?? 1_000);

let stack: Stack;
let site: Awaited<ReturnType<typeof serveFixturePage>>;
let browser: Browser;
const rows: { scenario: string; measure: string; value: string; target: string; met: string }[] = [];

beforeAll(async () => {
  site = await serveFixturePage("production");
  [stack, browser] = await Promise.all([startStack({ CORS_ALLOWED_ORIGINS: site.origin }), launchChromium()]);
});
afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  await site?.close();
  const table = [
    "| scenario | measure | value | target | met |",
    "|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.scenario} | ${r.measure} | ${r.value} | ${r.target} | ${r.met} |`),
  ];
  console.log(`\n${table.join("\n")}\n`);
});

function record(scenario: string, measure: string, value: number, unit: string, limit: number) {
  rows.push({ scenario, measure, value: `${Math.round(value * 10) / 10} ${unit}`, target: `≤ ${limit} ${unit}`, met: value <= limit ? "yes" : "NO" });
}

/** A page that records long tasks (PerformanceObserver `longtask`) from its first script on. */
async function instrumentedPage(): Promise<Page> {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.addInitScript(() => {
    const w = window as unknown as { longTasks: number[] };
    w.longTasks = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) w.longTasks.push(entry.duration);
    }).observe({ type: "longtask", buffered: true });
  });
  return page;
}

const longTasks = (page: Page) => page.evaluate(() => (window as unknown as { longTasks: number[] }).longTasks.slice());
/** Forgets the long tasks so far: the page's start (parsing and running the bundle) is not the viewer at work. */
const resetLongTasks = (page: Page) => page.evaluate(() => void ((window as unknown as { longTasks: number[] }).longTasks = []));
const domRows = (page: Page) => page.evaluate(() => document.querySelectorAll(".bl-row").length);

it("history: scrolling a long log to its top", async () => {
  const job = await stack.newJob({ status: "code" });
  // Written as another writer than the runner would: the runner keeps about 50,000 lines
  // (`MAXLEN ~ 50000`), and this log is to hold all of them.
  for (let start = 0; start < HISTORY_LINES; start += 500) {
    const n = Math.min(500, HISTORY_LINES - start);
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        stack.redis.client.sendCommand(["XADD", `job:${job}:logs`, "*", "ts", new Date().toISOString(), "source", "stdout", "text", `history ${start + i + 1}`, "phase", "build"]),
      ),
    );
  }
  await stack.runner.setStatus(job, "ready");
  const page = await instrumentedPage();
  await page.goto(pageUrl(site.origin, { baseUrl: stack.baseUrl, job, token: stack.token(), maxLines: HISTORY_LINES, pageSize: 500 }));
  await page.waitForFunction((n) => document.querySelector(".bl-row:last-child")?.textContent?.endsWith(`history ${n}`), HISTORY_LINES);
  let maxRows = await domRows(page);
  const boot = Math.max(0, ...(await longTasks(page)));
  await resetLongTasks(page);
  const started = performance.now();
  let pages = 1;
  const canvasHeight = () => page.evaluate(() => (document.querySelector(".bl-canvas") as HTMLElement).offsetHeight);
  while (await page.$(".bl-earlier:not([disabled])")) {
    const before = await canvasHeight();
    await page.click(".bl-earlier");
    // Done when the page above has been added (the canvas grew) and the button, if any is
    // left, can be clicked again; the button alone would race React's next render.
    await page.waitForFunction((height) => {
      const button = document.querySelector(".bl-earlier") as HTMLButtonElement | null;
      const canvas = document.querySelector(".bl-canvas") as HTMLElement;
      return canvas.offsetHeight > height && (!button || !button.disabled);
    }, before);
    pages += 1;
    maxRows = Math.max(maxRows, await domRows(page));
  }
  // The reader scrolls through: to the middle, then to the top.
  for (const fraction of [0.5, 0.25, 0]) {
    await page.evaluate((f) => {
      const el = document.querySelector(".bl-scroller") as HTMLElement;
      el.scrollTop = el.scrollHeight * f;
    }, fraction);
    await page.waitForTimeout(100);
    maxRows = Math.max(maxRows, await domRows(page));
  }
  await page.waitForFunction(() => document.querySelector(".bl-row .bl-text")?.textContent === "history 1");
  const seconds = (performance.now() - started) / 1000;
  const tasks = await longTasks(page);
  const scenario = `history: ${HISTORY_LINES.toLocaleString("en")} lines to the top (${pages} pages in ${seconds.toFixed(1)} s)`;
  rows.push({ scenario, measure: "page start (parse and run the bundle, first render): longest task", value: `${Math.round(boot)} ms`, target: "-", met: "-" });
  record(scenario, "DOM rows, most at once", maxRows, "rows", 200);
  record(scenario, "longest task after the start", Math.max(0, ...tasks), "ms", 50);
  rows.push({ scenario, measure: "tasks over 50 ms", value: String(tasks.filter((t) => t > 50).length), target: "0", met: tasks.some((t) => t > 50) ? "NO" : "yes" });
  await page.close();
});

it("follow: a live log at a steady rate", async () => {
  const job = await stack.newJob({ status: "code" });
  const page = await instrumentedPage();
  await page.addInitScript(() => {
    const w = window as unknown as { firstPaint?: number };
    new MutationObserver((_, observer) => {
      if (!document.querySelector(".bl-row")) return;
      observer.disconnect();
      // The frame after the row is in the DOM has painted it.
      requestAnimationFrame(() => setTimeout(() => (w.firstPaint = Date.now()), 0));
    }).observe(document, { childList: true, subtree: true });
  });
  const opened = page.waitForResponse((r) => r.url().endsWith(`/api/jobs/${job}/logs/stream`)).then(() => Date.now());
  await page.goto(pageUrl(site.origin, { baseUrl: stack.baseUrl, job, token: stack.token() }));
  const openedAt = await opened;
  await stack.runner.append(job, "first line");
  await page.waitForFunction(() => (window as unknown as { firstPaint?: number }).firstPaint !== undefined);
  const firstPaint = (await page.evaluate(() => (window as unknown as { firstPaint: number }).firstPaint)) - openedAt;

  const boot = Math.max(0, ...(await longTasks(page)));
  await resetLongTasks(page);
  const total = Math.round(RATE * FOLLOW_SECS);
  await writeAtRate(stack, job, total, RATE, "follow");
  await page.waitForFunction((n) => document.querySelector(".bl-row:last-child")?.textContent?.endsWith(`follow ${n}`), total, {
    timeout: 60_000,
  });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("HeapProfiler.collectGarbage");
  const heap = (await cdp.send("Runtime.getHeapUsage")) as { usedSize: number };
  const tasks = await longTasks(page);
  const scenario = `follow: ${RATE.toLocaleString("en")} lines/s for ${FOLLOW_SECS} s (default maxLines)`;
  record(scenario, "first line painted after the stream opened", firstPaint, "ms", 300);
  rows.push({ scenario, measure: "page start: longest task", value: `${Math.round(boot)} ms`, target: "-", met: "-" });
  record(scenario, "longest task after the start", Math.max(0, ...tasks), "ms", 50);
  rows.push({ scenario, measure: "tasks over 50 ms", value: String(tasks.filter((t) => t > 50).length), target: "0", met: tasks.some((t) => t > 50) ? "NO" : "yes" });
  record(scenario, "JS heap at the end (after GC)", heap.usedSize / 2 ** 20, "MB", 100);
  record(scenario, "DOM rows at the end", await domRows(page), "rows", 200);
  await page.close();
});
