/**
 * Browser-test plumbing: bundles the fixture page (test/fixtures) with esbuild into the test
 * output directory, serves it on its own origin, and opens it on a job in headless Chromium.
 */
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

import { type Page, serveStatic } from "./support.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
/** Screenshots and the bundled page go here (git-ignored), for a person to look at. */
export const OUTPUT = join(root, "test-output");

/** `production` builds React as an app ships it (the performance script); tests get its checks. */
export async function serveFixturePage(
  mode: "development" | "production" = "development",
): Promise<Awaited<ReturnType<typeof serveStatic>>> {
  const dir = join(OUTPUT, `page-${mode}`);
  mkdirSync(dir, { recursive: true });
  await build({
    entryPoints: [join(root, "test", "fixtures", "page.tsx")],
    outfile: join(dir, "page.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": JSON.stringify(mode) },
    minify: mode === "production",
    alias: {
      "@buildlogs/react": join(root, "src", "index.ts"),
      "@buildlogs/client": join(root, "..", "typescript", "src", "index.ts"),
    },
    logLevel: "warning",
  });
  copyFileSync(join(root, "test", "fixtures", "index.html"), join(dir, "index.html"));
  return serveStatic(dir);
}

export interface PageOptions {
  baseUrl: string;
  job: string;
  token: string;
  maxLines?: number;
  pageSize?: number;
  theme?: "light" | "dark";
  wrap?: boolean;
}

export function pageUrl(origin: string, options: PageOptions): string {
  const url = new URL(`${origin}/index.html`);
  url.searchParams.set("baseUrl", options.baseUrl);
  url.searchParams.set("job", options.job);
  if (options.maxLines !== undefined) url.searchParams.set("maxLines", String(options.maxLines));
  if (options.pageSize !== undefined) url.searchParams.set("pageSize", String(options.pageSize));
  if (options.theme) url.searchParams.set("theme", options.theme);
  if (options.wrap) url.searchParams.set("wrap", "1");
  url.hash = new URLSearchParams({ token: options.token }).toString();
  return url.toString();
}

/** What the scroller shows: rows in the DOM, scroll position, and whether it is at the end. */
export async function scrollState(page: Page) {
  return page.evaluate(() => {
    const el = document.querySelector(".bl-scroller") as HTMLElement;
    return {
      rows: document.querySelectorAll(".bl-row").length,
      scrollTop: el.scrollTop,
      atEnd: el.scrollHeight - el.scrollTop - el.clientHeight <= 4,
      following: (document.querySelector(".bl-root") as HTMLElement).dataset.following === "true",
      lastText: (document.querySelector(".bl-row:last-child .bl-text") as HTMLElement | null)?.textContent ?? null,
    };
  });
}

/** The row at the top of the scroller's viewport (below the sticky label) and its offset from that top, in px. */
export async function firstVisibleRow(page: Page): Promise<{ id: string; offset: number }> {
  return page.evaluate(() => {
    const el = document.querySelector(".bl-scroller") as HTMLElement;
    const top = el.getBoundingClientRect().top;
    const rows = [...document.querySelectorAll<HTMLElement>(".bl-row")]
      .map((row) => ({ id: row.dataset.id ?? "", offset: row.getBoundingClientRect().top - top }))
      .filter((r) => r.offset >= 0)
      .sort((a, b) => a.offset - b.offset);
    if (!rows[0]) throw new Error("no row visible");
    return rows[0];
  });
}

/** The row of line `id`'s offset from the scroller's top, in px. */
export async function rowOffset(page: Page, id: string): Promise<number> {
  return page.evaluate((lineId) => {
    const el = document.querySelector(".bl-scroller") as HTMLElement;
    const row = document.querySelector(`.bl-row[data-id="${lineId}"]`) as HTMLElement | null;
    if (!row) throw new Error(`row ${lineId} is not in the DOM`);
    return row.getBoundingClientRect().top - el.getBoundingClientRect().top;
  }, id);
}
