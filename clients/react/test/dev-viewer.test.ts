// The example viewer as `buildlogs serve --dev` serves it at /viewer/ (the built assets inside the
// binary, the dev token route), in headless Chromium: it opens the demo job and follows it to the
// end, and a permalink (`#L<line id>`) opens on its line.
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { OUTPUT } from "./browser.js";
import { type Browser, type BuildlogsServer, launchChromium, startServer, waitFor } from "./support.js";

let server: BuildlogsServer;
let browser: Browser;

beforeAll(async () => {
  [server, browser] = await Promise.all([
    startServer({ DEV_DEMO_SECS: "4", DEV_JOB_EVERY_SECS: "3600", HEARTBEAT_SECS: "1" }, ["--dev"]),
    launchChromium(),
  ]);
});
afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

describe("serve --dev's /viewer/", () => {
  it("opens the job named in ?job= and follows it to ready", async () => {
    const url = await waitFor("the printed viewer URL", () => /^Viewer: (\S+)/m.exec(server.output())?.[1]);
    expect(url).toBe(`${server.baseUrl}/viewer/?job=demo-1`);
    const page = await browser.context.newPage();
    await page.setViewportSize({ width: 1100, height: 650 });
    const problems: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(e.message));
    const tokenRequest = page.waitForResponse((r) => r.url().endsWith("/viewer/token"));
    await page.goto(url);
    expect((await tokenRequest).status()).toBe(200);
    await page.waitForSelector(".bl-row");
    expect(await page.textContent(".bl-title")).toBe("Job demo-1");
    await page.screenshot({ path: join(OUTPUT, "dev-viewer-running.png") });

    await page.waitForSelector('.bl-badge[data-state="ready"]', { timeout: 20_000 });
    await page.waitForFunction(() => document.querySelector(".bl-row:last-child")?.textContent?.includes("Build finished"));
    expect(await page.textContent('[role="status"]')).toBe("Job ready");
    await page.screenshot({ path: join(OUTPUT, "dev-viewer-ready.png") });
    expect(problems).toEqual([]);

    // A permalink into it, in a page of its own: it opens on that line, highlighted.
    const lineId = await page.getAttribute(".bl-row:nth-child(3)", "data-id");
    const linked = await browser.context.newPage();
    await linked.goto(`${url}#L${lineId}`);
    await linked.waitForSelector(`.bl-row[data-id="${lineId}"][data-highlight="true"]`);
    expect(await linked.$$eval('.bl-row[data-highlight="true"]', (rows) => rows.length)).toBe(1);
    await linked.close();

    // Another job by its id: the one that does not exist says so.
    await page.fill("#job", "demo-404");
    await page.press("#job", "Enter");
    await page.waitForSelector(".bl-error");
    expect(page.url()).toBe(`${server.baseUrl}/viewer/?job=demo-404`);
    expect(await page.textContent(".bl-error")).toMatch(/^NotFoundError/);
    await page.close();
  });
});
