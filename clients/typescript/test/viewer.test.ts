import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type Browser, launchChromium } from "./support/browser.js";
import { type Stack, startStack } from "./support/stack.js";
import { serveStatic } from "./support/static.js";

const viewerDir = join(dirname(fileURLToPath(import.meta.url)), "..", "examples", "viewer");

let stack: Stack;
let site: Awaited<ReturnType<typeof serveStatic>>;
let browser: Browser;

beforeAll(async () => {
  execFileSync(process.execPath, [join(viewerDir, "build.mjs")], { stdio: "inherit" });
  site = await serveStatic(viewerDir);
  // The page is on another origin (another port) than the API: CORS must let it in.
  [stack, browser] = await Promise.all([
    startStack({ CORS_ALLOWED_ORIGINS: site.origin }),
    launchChromium(),
  ]);
});
afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  await site?.close();
});

async function lineIds(page: Page): Promise<string[]> {
  return page.$$eval("#lines li", (items) => items.map((li) => (li as HTMLElement).dataset.id ?? ""));
}

describe("viewer page in headless Chromium", () => {
  it("shows live lines, prepends older ones on Load earlier, and the final status", async () => {
    const job = await stack.newJob({ status: "code" });
    await stack.runner.appendMany(job, 130, "before");
    const page = await browser.context.newPage();
    const consoleErrors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(e.message));
    const streamResponse = page.waitForResponse((r) => r.url().endsWith(`/api/jobs/${job}/logs/stream`));

    const url = new URL(`${site.origin}/index.html`);
    url.searchParams.set("baseUrl", stack.baseUrl);
    url.searchParams.set("jobId", job);
    url.searchParams.set("limit", "50");
    url.hash = new URLSearchParams({ token: stack.token() }).toString();
    await page.goto(url.toString());

    const response = await streamResponse;
    expect(response.status()).toBe(200);
    expect(response.headers()["access-control-allow-origin"]).toBe(site.origin);
    await page.waitForFunction(() => document.getElementById("connection")?.textContent === "open");
    expect(await page.textContent("#status")).toBe("code");
    await page.waitForFunction(() => !(document.getElementById("load-earlier") as HTMLButtonElement).disabled);

    // Live lines render as they arrive.
    const live = await stack.runner.appendMany(job, 20, "live", 10);
    await page.waitForFunction(() => document.querySelectorAll("#lines li").length === 20);
    expect(await lineIds(page)).toEqual(live);
    expect(await page.textContent("#lines li:last-child")).toBe("[build] live 20");

    // "Load earlier" prepends the 50 lines just above the live ones: no gap, no duplicate.
    const all = await stack.runner.allIds(job);
    await page.click("#load-earlier");
    await page.waitForFunction(() => document.querySelectorAll("#lines li").length === 70);
    expect(await lineIds(page)).toEqual(all.slice(80));
    expect(await page.textContent("#lines li:first-child")).toBe("[build] before 81");

    // ...until the beginning of the log.
    await page.click("#load-earlier");
    await page.waitForFunction(() => document.querySelectorAll("#lines li").length === 120);
    await page.click("#load-earlier");
    await page.waitForFunction(() => document.querySelectorAll("#lines li").length === 150);
    expect(await lineIds(page)).toEqual(all);
    await page.waitForFunction(() => (document.getElementById("load-earlier") as HTMLButtonElement).disabled);
    expect(await page.textContent("#load-earlier")).toBe("Beginning of the log");

    // The final status.
    await stack.runner.setStatus(job, "failed", "Build failed");
    await page.waitForSelector("#final:not([hidden])");
    expect(await page.textContent("#final")).toBe("finished: failed");
    expect(await page.textContent("#status")).toBe("failed");
    expect(await page.textContent("#connection")).toBe("closed");
    expect(await page.textContent("#error")).toBe("");
    expect(consoleErrors).toEqual([]);
    await page.close();
  });

  it("shows a 401 as an error and does not retry", async () => {
    const job = await stack.newJob({ status: "code" });
    const page = await browser.context.newPage();
    let streamRequests = 0;
    page.on("request", (r) => {
      if (r.url().includes("/logs/stream") && r.method() === "GET") streamRequests += 1;
    });
    const url = new URL(`${site.origin}/index.html`);
    url.searchParams.set("baseUrl", stack.baseUrl);
    url.searchParams.set("jobId", job);
    url.hash = "token=forged";
    await page.goto(url.toString());
    await page.waitForFunction(() => document.getElementById("error")?.textContent !== "");
    expect(await page.textContent("#error")).toMatch(/^UnauthorizedError \(401 unauthorized\)/);
    expect(await page.textContent("#connection")).toBe("closed");
    await page.waitForTimeout(500);
    expect(streamRequests).toBe(1);
    await page.close();
  });
});
