// <BuildLog> in headless Chromium against the real binary, on a page of another origin: follow
// mode, "Load earlier" keeping the rows in place, colours as computed styles, log text that
// stays text, status announcements and the keyboard; permalinks, search and download.
// Screenshots go to test-output/.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { firstVisibleRow, OUTPUT, pageUrl, rowOffset, scrollState, serveFixturePage } from "./browser.js";
import {
  type Browser,
  launchChromium,
  type Page,
  type Stack,
  startProxy,
  startStack,
  writeAtRate,
  writeMany,
} from "./support.js";

let stack: Stack;
let site: Awaited<ReturnType<typeof serveFixturePage>>;
let browser: Browser;

beforeAll(async () => {
  site = await serveFixturePage();
  [stack, browser] = await Promise.all([startStack({ CORS_ALLOWED_ORIGINS: site.origin }), launchChromium()]);
});
afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  await site?.close();
});

/** Opens the page on `job`, collecting console errors, page errors and dialogs. */
async function open(
  job: string,
  extra: { maxLines?: number; pageSize?: number; theme?: "light" | "dark"; baseUrl?: string; line?: string } = {},
) {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1000, height: 600 });
  const problems: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("dialog", (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  const url = new URL(pageUrl(site.origin, { job, token: stack.token(), ...extra, baseUrl: extra.baseUrl ?? stack.baseUrl }));
  if (extra.line !== undefined) {
    // A permalink: the fragment is the line, so the token goes in the query.
    url.searchParams.set("token", stack.token());
    url.hash = `L${extra.line}`;
  }
  await page.goto(url.toString());
  await page.waitForSelector('.bl-badge[data-state="running"]');
  return { page, problems };
}

/** Whether line `id`'s row is wholly inside the scroller's viewport. */
const inView = (page: Page, id: string) =>
  page.evaluate((lineId) => {
    const el = document.querySelector(".bl-scroller") as HTMLElement;
    const row = document.querySelector(`.bl-row[data-id="${lineId}"]`);
    if (!row) return false;
    const box = el.getBoundingClientRect();
    const r = row.getBoundingClientRect();
    return r.top >= box.top && r.bottom <= box.bottom;
  }, id);

/** The history requests the page made, by their cursor (`around_id=…`, `after_id=…`, …). */
function historyRequests(page: Page): string[] {
  const seen: string[] = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.pathname.endsWith("/logs") && request.method() === "GET") seen.push(url.search);
  });
  return seen;
}

const rowCount = (page: Page) => page.evaluate(() => document.querySelectorAll(".bl-row").length);

describe("<BuildLog> in headless Chromium", () => {
  it("follows the end, pauses when the reader scrolls up, and jumps back with the count of new lines", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 200, "history");
    const { page, problems } = await open(job);
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child")?.textContent?.includes("history 200"));
    expect((await scrollState(page)).atEnd).toBe(true);

    // Live lines: the view stays at the bottom, showing the newest.
    await writeAtRate(stack, job, 100, 200, "live");
    await page.waitForFunction(() =>
      [...document.querySelectorAll(".bl-row")].some((r) => r.textContent?.endsWith("live 100")),
    );
    await page.waitForFunction(() => {
      const el = document.querySelector(".bl-scroller") as HTMLElement;
      return el.scrollHeight - el.scrollTop - el.clientHeight <= 4;
    });
    let state = await scrollState(page);
    expect(state.following).toBe(true);
    expect(state.rows).toBeLessThan(120); // virtualised: 300 lines, a screenful of rows (plus overscan)
    await page.screenshot({ path: join(OUTPUT, "viewer-following.png") });

    // The reader scrolls up: following pauses, and new lines do not move the view.
    await page.mouse.move(500, 300);
    await page.mouse.wheel(0, -600);
    await page.waitForFunction(() => (document.querySelector(".bl-root") as HTMLElement).dataset.following === "false");
    const anchor = await firstVisibleRow(page);
    await writeAtRate(stack, job, 30, 300, "while-paused");
    await page.waitForSelector(".bl-jump");
    await page.waitForFunction(() => document.querySelector(".bl-jump")?.textContent === "Jump to latest (30 new)");
    expect(Math.abs((await rowOffset(page, anchor.id)) - anchor.offset)).toBeLessThan(2);
    state = await scrollState(page);
    expect(state.atEnd).toBe(false);
    await page.screenshot({ path: join(OUTPUT, "viewer-paused.png") });

    // Jump back: at the end again, following, the button gone, and new lines followed.
    await page.click(".bl-jump");
    await page.waitForFunction(() => (document.querySelector(".bl-root") as HTMLElement).dataset.following === "true");
    await page.waitForSelector(".bl-jump", { state: "detached" });
    await writeAtRate(stack, job, 10, 200, "after-jump");
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child")?.textContent?.endsWith("after-jump 10"));
    await page.waitForFunction(() => {
      const el = document.querySelector(".bl-scroller") as HTMLElement;
      return el.scrollHeight - el.scrollTop - el.clientHeight <= 4;
    });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("keeps the first visible row in place when Load earlier adds lines above", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 1_000, "old");
    const { page, problems } = await open(job, { pageSize: 100 });
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child")?.textContent?.endsWith("old 1000"));

    // Up to the top of what is loaded (the last 100 lines), with "Load earlier" above them.
    await page.mouse.move(500, 300);
    for (let i = 0; i < 5; i++) await page.mouse.wheel(0, -2_000);
    await page.waitForFunction(() => (document.querySelector(".bl-scroller") as HTMLElement).scrollTop === 0);
    const before = await firstVisibleRow(page);
    expect(await page.textContent(`.bl-row[data-id="${before.id}"] .bl-text`)).toBe("old 901");
    expect(before.offset).toBe(32); // right under "Load earlier"

    await page.click(".bl-earlier");
    await page.waitForFunction(() => document.querySelector(".bl-earlier")?.textContent === "Load earlier");
    await page.waitForFunction((id) => {
      const el = document.querySelector(".bl-scroller") as HTMLElement;
      return el.scrollHeight > 200 * 20 && document.querySelector(`.bl-row[data-id="${id}"]`) !== null;
    }, before.id);
    const after = await rowOffset(page, before.id);
    expect(Math.abs(after - before.offset)).toBeLessThan(2);
    // Right above it now: the line before it, from the page just loaded (no gap, no repeat).
    expect(await page.evaluate((id) => {
      const row = document.querySelector(`.bl-row[data-id="${id}"]`) as HTMLElement;
      const index = Number(row.dataset.index);
      return document.querySelector(`.bl-row[data-index="${index - 1}"] .bl-text`)?.textContent;
    }, before.id)).toBe("old 900");
    expect(await rowCount(page)).toBeLessThan(120);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("shows ANSI colours as computed styles, http(s) OSC 8 links as links, and log text as text", async () => {
    const job = await stack.newJob({ status: "code" });
    const esc = "\u001b";
    await stack.runner.append(job, `${esc}[31mred${esc}[0m plain ${esc}[1;32mbold green${esc}[0m ${esc}[38;2;10;20;30mtruecolor${esc}[0m`);
    await stack.runner.append(job, `${esc}]8;;https://example.com/build/1${esc}\\the build${esc}]8;;${esc}\\ and ${esc}]8;;javascript:alert(1)${esc}\\not a link${esc}]8;;${esc}\\`);
    await stack.runner.append(job, "<img src=x onerror=alert(1)>");
    await stack.runner.append(job, `<script>alert(2)</script> ${esc}]0;window title${esc}\\ & &amp; done`);
    const { page, problems } = await open(job, { theme: "light" });
    await page.waitForFunction(() => document.querySelectorAll(".bl-row").length === 4);

    const styles = await page.evaluate(() => {
      const spans = [...document.querySelectorAll<HTMLElement>(".bl-row:nth-child(1) .bl-text span")];
      return spans.map((s) => ({ text: s.textContent, color: getComputedStyle(s).color, weight: getComputedStyle(s).fontWeight }));
    });
    expect(styles).toEqual([
      { text: "red", color: "rgb(207, 34, 46)", weight: "400" }, // --bl-ansi-red, light theme
      { text: "bold green", color: "rgb(17, 99, 41)", weight: "700" }, // --bl-ansi-green
      { text: "truecolor", color: "rgb(10, 20, 30)", weight: "400" },
    ]);
    expect(await page.textContent(".bl-row:nth-child(1) .bl-text")).toBe("red plain bold green truecolor");

    const links = await page.evaluate(() =>
      [...document.querySelectorAll<HTMLAnchorElement>(".bl-text a")].map((a) => ({ href: a.href, text: a.textContent, rel: a.rel })),
    );
    expect(links).toEqual([{ href: "https://example.com/build/1", text: "the build", rel: "noopener noreferrer nofollow" }]);
    expect(await page.textContent(".bl-row:nth-child(2) .bl-text")).toBe("the build and not a link");

    // Markup in a line is text: no element made from it, no script run, no dialog.
    expect(await page.textContent(".bl-row:nth-child(3) .bl-text")).toBe("<img src=x onerror=alert(1)>");
    expect(await page.textContent(".bl-row:nth-child(4) .bl-text")).toBe("<script>alert(2)</script>  & &amp; done");
    expect(await page.evaluate(() => document.querySelectorAll(".bl-root img, .bl-root script").length)).toBe(0);
    await page.waitForTimeout(200);
    expect(problems).toEqual([]);

    // The dark theme's red is another colour: the palette follows the theme's variables.
    await page.evaluate(() => document.querySelector(".bl-root")!.setAttribute("data-theme", "dark"));
    expect(await page.evaluate(() => getComputedStyle(document.querySelector(".bl-row .bl-text span")!).color)).toBe(
      "rgb(255, 123, 114)",
    );
    await page.close();
  });

  it("announces status changes politely (lines are not announced) and works from the keyboard", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 300, "k");
    const { page, problems } = await open(job);
    expect(await page.getAttribute('[role="log"]', "aria-live")).toBe("off");
    expect(await page.getAttribute('[role="status"]', "aria-live")).toBe("polite");
    await page.waitForFunction(() => document.querySelector('[role="status"]')?.textContent === "Job code", undefined, { timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child")?.textContent?.endsWith("k 300"));

    // Tab reaches the wrap toggle; Space presses it.
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Wrap lines");
    await page.keyboard.press("Space");
    expect(await page.getAttribute(".bl-toolbar button", "aria-pressed")).toBe("true");
    await page.keyboard.press("Space");

    // The log itself takes the focus: PageUp pauses following, End jumps back to the latest.
    await page.focus(".bl-scroller");
    await page.keyboard.press("PageUp");
    await page.waitForFunction(() => (document.querySelector(".bl-root") as HTMLElement).dataset.following === "false");
    // Chromium scrolls smoothly: let Page Up's scroll end before the next key.
    let last = -1;
    for (;;) {
      const top = await page.evaluate(() => (document.querySelector(".bl-scroller") as HTMLElement).scrollTop);
      if (top === last) break;
      last = top;
      await page.waitForTimeout(100);
    }
    expect((await scrollState(page)).atEnd).toBe(false);
    await page.keyboard.press("End");
    await page.waitForFunction(() => (document.querySelector(".bl-root") as HTMLElement).dataset.following === "true");

    await stack.runner.setStatus(job, "failed", "Build failed");
    await page.waitForFunction(() => document.querySelector('[role="status"]')?.textContent === "Job failed");
    expect(await page.getAttribute(".bl-badge", "data-state")).toBe("failed");
    expect(problems).toEqual([]);
    await page.close();
  });

  it("shows a notice when lines were trimmed while the connection was down", async () => {
    const job = await stack.newJob({ status: "code" });
    const proxy = await startProxy(stack.baseUrl);
    try {
      const { page, problems } = await open(job, { baseUrl: proxy.baseUrl });
      await page.waitForSelector(".bl-top span"); // the (empty) first page of history is in
      const before = await stack.runner.appendMany(job, 10, "before");
      await page.waitForFunction(() => document.querySelectorAll(".bl-row").length === 10);
      expect(await page.$(".bl-notice")).toBeNull();

      // The connection drops; meanwhile 30 lines are written and all but the last 10 trimmed away.
      proxy.drop();
      const during = await stack.runner.appendMany(job, 30, "during");
      await stack.redis.client.sendCommand(["XTRIM", `job:${job}:logs`, "MAXLEN", "=", "10"]);
      await page.waitForSelector(".bl-notice", { timeout: 15_000 });
      expect(await page.textContent(".bl-notice span")).toMatch(/^Some lines were trimmed away while the connection was down/);
      await page.waitForFunction(() => document.querySelectorAll(".bl-row").length === 20);
      const shown = await page.$$eval(".bl-row", (rows) => rows.map((r) => (r as HTMLElement).dataset.id));
      expect(shown).toEqual([...before, ...during.slice(20)]); // what was shown, then what is left
      // The gap is marked on the first line after it.
      expect(await page.$$eval('.bl-row[data-gap="true"]', (rows) => rows.map((r) => (r as HTMLElement).dataset.id))).toEqual([
        during[20],
      ]);
      expect(await page.textContent('[role="status"]')).toBe("Some lines were trimmed while the connection was down");
      await page.screenshot({ path: join(OUTPUT, "viewer-reset-notice.png") });

      await page.click(".bl-notice button");
      await page.waitForSelector(".bl-notice", { state: "detached" });
      expect(problems.filter((p) => !p.includes("ERR_") && !p.includes("network"))).toEqual([]);
      await page.close();
    } finally {
      await proxy.close();
    }
  });

  it("opens a permalink on its line, pages both ways from it into the live tail, and sets the hash from a gutter click", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 2_000, "p");
    const ids = await stack.runner.allIds(job);
    const target = ids[999]!; // "p 1000"
    await browser.context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: site.origin });
    const { page, problems } = await open(job, { line: target, pageSize: 200 });
    await page.waitForSelector(`.bl-row[data-id="${target}"][data-highlight="true"]`);
    await page.waitForFunction((id) => {
      const el = document.querySelector(".bl-scroller") as HTMLElement;
      const row = document.querySelector(`.bl-row[data-id="${id}"]`);
      if (!row) return false;
      const box = el.getBoundingClientRect();
      const r = row.getBoundingClientRect();
      return r.top >= box.top && r.bottom <= box.bottom;
    }, target);
    expect(await page.textContent(`.bl-row[data-id="${target}"] .bl-text`)).toBe("p 1000");
    expect(await page.$$eval('.bl-row[data-highlight="true"]', (rows) => rows.length)).toBe(1);
    // The page around it, not the latest lines: both ways remain to be loaded.
    expect(await page.$(".bl-earlier")).not.toBeNull();
    expect(await page.$(".bl-later")).not.toBeNull();
    expect(await page.evaluate(() => location.hash)).toBe(`#L${target}`);
    expect((await scrollState(page)).following).toBe(false);
    // About half a page (200) above it.
    const above = Number(await page.getAttribute(`.bl-row[data-id="${target}"]`, "data-index"));
    expect(above).toBeGreaterThan(80);
    expect(above).toBeLessThan(120);
    const first = `p ${1000 - above}`;
    const firstId = ids[999 - above]!;
    await page.screenshot({ path: join(OUTPUT, "viewer-permalink.png") });

    // A gutter click: the hash names that line, the link is copied, and it is highlighted instead.
    const other = ids[1004]!;
    await page.click(`.bl-row[data-id="${other}"] .bl-gutter`);
    expect(await page.evaluate(() => location.hash)).toBe(`#L${other}`);
    await page.waitForSelector(`.bl-row[data-id="${other}"][data-highlight="true"]`);
    expect(await page.$(`.bl-row[data-id="${target}"][data-highlight="true"]`)).toBeNull();
    await page.waitForFunction((hash) => navigator.clipboard.readText().then((t) => t.endsWith(hash)), `#L${other}`);
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(page.url());

    // Down: pages load as the reader nears the bottom, until the view is the live tail.
    const requests = historyRequests(page);
    await page.mouse.move(500, 300);
    const live: string[] = [];
    for (let i = 0; i < 100 && (await page.$(".bl-bottom")); i++) {
      if (i === 2) live.push(...(await stack.runner.appendMany(job, 5, "live"))); // written while paging
      await page.mouse.wheel(0, 3_000);
      await page.waitForFunction(() => !document.querySelector(".bl-later")?.hasAttribute("disabled"));
    }
    expect(await page.$(".bl-bottom")).toBeNull();
    expect(requests.filter((q) => q.includes("after_id=")).length).toBeGreaterThanOrEqual(4);
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child .bl-text")?.textContent === "live 5");
    const more = await stack.runner.appendMany(job, 3, "more");
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child .bl-text")?.textContent === "more 3");
    await page.waitForFunction(() => {
      const el = document.querySelector(".bl-scroller") as HTMLElement;
      return el.scrollHeight - el.scrollTop - el.clientHeight <= 4;
    });
    expect((await scrollState(page)).following).toBe(true);
    // Every line from the permalink's page down, once: read the rows' ids off the scrolled-through list.
    const shown = await page.evaluate(() => {
      const last = document.querySelector<HTMLElement>(".bl-row:last-child")!;
      return Number(last.dataset.index) + 1;
    });
    const all = await stack.runner.allIds(job);
    expect(all.slice(-8)).toEqual([...live, ...more]);
    expect(shown).toBe(all.length - all.indexOf(firstId));

    // Up: "Load earlier" above the permalink's page.
    for (let i = 0; i < 20 && (await page.evaluate(() => (document.querySelector(".bl-scroller") as HTMLElement).scrollTop)) > 0; i++) {
      await page.mouse.wheel(0, -100_000);
    }
    await page.waitForFunction(() => (document.querySelector(".bl-scroller") as HTMLElement).scrollTop === 0);
    expect(await page.textContent('.bl-row[data-index="0"] .bl-text')).toBe(first);
    await page.click(".bl-earlier");
    // 200 lines above it now, the one right above it the line before it: the view kept its place.
    await page.waitForSelector(`.bl-row[data-id="${firstId}"][data-index="200"]`);
    expect(await page.textContent('.bl-row[data-index="199"] .bl-text')).toBe(`p ${1000 - above - 1}`);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("opens a permalink to a line that is not in the log where it would stand, with a note", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 300, "q");
    const ids = await stack.runner.allIds(job);
    await stack.redis.client.sendCommand(["XTRIM", `job:${job}:logs`, "MAXLEN", "=", "100"]);
    const { page, problems } = await open(job, { line: ids[50]!, pageSize: 50 });
    await page.waitForSelector(".bl-around");
    expect(await page.textContent(".bl-around span")).toBe(
      `Line ${ids[50]} is not in this log (trimmed away, or never written): showing where it would be.`,
    );
    // Where it would be: right above the oldest retained line, which is marked.
    await page.waitForSelector(`.bl-row[data-id="${ids[200]}"][data-would-be="true"]`);
    expect(await page.textContent('.bl-row[data-index="0"] .bl-text')).toBe("q 201");
    expect(await page.textContent(".bl-top")).toBe("Beginning of the log");
    await page.click(".bl-around button");
    await page.waitForSelector(".bl-around", { state: "detached" });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("searches the whole log: next and previous land on each match in turn, jumping to those not loaded", async () => {
    const job = await stack.newJob({ status: "code" });
    const at = new Set([50, 700, 1500, 1990]);
    for (let start = 1; start <= 2_000; start += 500) {
      await Promise.all(
        Array.from({ length: 500 }, (_, i) => start + i).map((n) =>
          stack.runner.append(job, at.has(n) ? `step ${n}: found the \u001b[31mNeedle\u001b[0m here` : `step ${n}`),
        ),
      );
    }
    const ids = await stack.runner.allIds(job);
    const matchIds = [...at].map((n) => ids[n - 1]!);
    const { page, problems } = await open(job, { pageSize: 100 });
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child .bl-text")?.textContent === "step 2000");
    const requests = historyRequests(page);

    // Ctrl+F in the viewer focuses the search box.
    await page.focus(".bl-scroller");
    await page.keyboard.press("Control+f");
    expect(await page.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toBe("Search the log");
    await page.keyboard.type("needle");
    await page.waitForFunction(() => document.querySelector(".bl-search-count")?.textContent === "4 matches");

    const landOn = async (index: number) => {
      const id = matchIds[index]!;
      await page.waitForSelector(`.bl-row[data-id="${id}"][data-match="current"]`);
      await page.waitForFunction((lineId) => {
        const el = document.querySelector(".bl-scroller") as HTMLElement;
        const row = document.querySelector(`.bl-row[data-id="${lineId}"]`);
        if (!row) return false;
        const box = el.getBoundingClientRect();
        const r = row.getBoundingClientRect();
        return r.top >= box.top && r.bottom <= box.bottom;
      }, id);
      expect(await inView(page, id)).toBe(true);
      expect(await page.textContent(".bl-search-count")).toBe(`${index + 1} of 4`);
      // The match is marked inside its line, as text (the colour span keeps its colour).
      expect(await page.$$eval(`.bl-row[data-id="${id}"] mark.bl-mark`, (marks) => marks.map((m) => m.textContent))).toEqual(["Needle"]);
      expect(await page.$$eval('.bl-row[data-match="current"]', (rows) => rows.length)).toBe(1);
    };

    await page.keyboard.press("Enter");
    await landOn(0); // "step 50": not loaded, opened with around_id
    expect(requests.some((q) => q.includes(`around_id=${encodeURIComponent(matchIds[0]!)}`))).toBe(true);
    await page.screenshot({ path: join(OUTPUT, "viewer-searching.png") });
    await page.keyboard.press("Enter");
    await landOn(1);
    await page.click('button[aria-label="Next match"]');
    await landOn(2);
    await page.focus(".bl-search-input");
    await page.keyboard.press("Enter");
    await landOn(3);
    await page.keyboard.press("Shift+Enter");
    await landOn(2);
    await page.click('button[aria-label="Previous match"]');
    await landOn(1);
    await page.focus(".bl-search-input");
    await page.keyboard.press("Enter");
    await page.keyboard.press("Enter");
    await page.keyboard.press("Enter"); // past the last: back to the first
    await landOn(0);
    expect(await page.textContent("[aria-live=polite]:not([role])")).toBe("Match 1 of 4");

    // Case and regex toggles (aria-pressed), and a bad pattern's error from the server, inline.
    await page.click('button[aria-label="Match case"]');
    expect(await page.getAttribute('button[aria-label="Match case"]', "aria-pressed")).toBe("true");
    await page.waitForFunction(() => document.querySelector(".bl-search-count")?.textContent === "No matches");
    await page.click('button[aria-label="Match case"]');
    await page.click('button[aria-label="Regular expression"]');
    expect(await page.getAttribute('button[aria-label="Regular expression"]', "aria-pressed")).toBe("true");
    await page.fill(".bl-search-input", "step 1[59]00:");
    await page.waitForFunction(() => document.querySelector(".bl-search-count")?.textContent === "1 matches");
    await page.fill(".bl-search-input", "needle (");
    await page.waitForSelector(".bl-search-error");
    const error = await page.textContent(".bl-search-error");
    expect(error).toMatch(/regex|pattern|parse/i);
    expect(error).not.toMatch(/redis|ERR /i);
    expect(await page.getAttribute(".bl-search-input", "aria-invalid")).toBe("true");
    expect(problems.filter((p) => !p.includes("400"))).toEqual([]);
    await page.close();
  });

  it("downloads the log as <job>.log with the same bytes as /logs/raw", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 300, "d");
    await stack.runner.append(job, "\u001b[32mgreen\u001b[0m and ünïcödé ✓");
    const { page, problems } = await open(job);
    await page.evaluate(() => {
      const revoke = URL.revokeObjectURL.bind(URL);
      (window as unknown as { revoked: string[] }).revoked = [];
      URL.revokeObjectURL = (url: string) => {
        (window as unknown as { revoked: string[] }).revoked.push(url);
        revoke(url);
      };
    });
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child .bl-text")?.textContent?.startsWith("green"));
    const saved = page.waitForEvent("download");
    await page.click(".bl-download");
    const download = await saved;
    expect(download.suggestedFilename()).toBe(`${job}.log`);
    const bytes = await readFile((await download.path())!);
    const raw = await fetch(`${stack.baseUrl}/api/jobs/${job}/logs/raw`, { headers: { Authorization: `Bearer ${stack.token()}` } });
    expect(raw.status).toBe(200);
    const expected = Buffer.from(await raw.arrayBuffer());
    expect(bytes.length).toBeGreaterThan(300 * 5);
    expect(bytes.equals(expected)).toBe(true);
    // The object URL is let go, and the button is back.
    await page.waitForFunction(() => (window as unknown as { revoked: string[] }).revoked.some((u) => u.startsWith("blob:")));
    expect(await page.textContent(".bl-download")).toBe("Download");
    expect(await page.isDisabled(".bl-download")).toBe(false);
    expect(problems).toEqual([]);

    // A refused download (here: the token expired) shows its error, and the button comes back.
    await page.route(`${stack.baseUrl}/api/jobs/${job}/logs/raw*`, (route) =>
      route.fulfill({ status: 401, contentType: "application/problem+json", headers: { "Access-Control-Allow-Origin": "*" }, body: JSON.stringify({ type: "about:blank", title: "Unauthorized", status: 401, detail: "the token has expired", code: "unauthorized" }) }),
    );
    await page.click(".bl-download");
    await page.waitForSelector(".bl-download-error");
    expect(await page.textContent(".bl-download-error span")).toBe("Download failed: the token has expired");
    expect(await page.isDisabled(".bl-download")).toBe(false);
    await page.close();
  });

  it("shows an error with a retry button that works", async () => {
    const job = `late-${process.pid}`;
    const page = await browser.context.newPage();
    await page.goto(pageUrl(site.origin, { baseUrl: stack.baseUrl, job, token: stack.token() }));
    await page.waitForSelector(".bl-error");
    expect(await page.textContent(".bl-error")).toMatch(/^NotFoundError: /);
    await page.waitForFunction(() => document.querySelector('[role="status"]')?.textContent?.startsWith("Error: "));

    await stack.runner.createJob(job, "user_test", "code");
    await page.click(".bl-error button");
    await page.waitForSelector(".bl-error", { state: "detached" });
    await page.waitForSelector('.bl-badge[data-state="running"]');
    await stack.runner.append(job, "after retry");
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child")?.textContent?.endsWith("after retry"));
    await page.close();
  });
});
