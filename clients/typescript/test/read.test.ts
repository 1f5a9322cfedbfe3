import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from "vitest";

import {
  BadRequestError,
  type BuildlogsClient,
  createBuildlogsClient,
  type LogDownload,
  type LogLine,
  NotFoundError,
  TooManyRequestsError,
  UnauthorizedError,
} from "../src/index.js";
import { countingFetch, type Stack, startStack } from "./support/stack.js";

let stack: Stack;
let client: BuildlogsClient;
let job: string;
let ids: string[];

// Every 25th line fails, in red, the way a test runner prints it.
const text = (i: number) => (i % 25 === 0 ? `test case_${i} ... \x1b[31mFAIL\x1b[0mED` : `test case_${i} ... ok`);

beforeAll(async () => {
  stack = await startStack({ MAX_STREAMS_PER_USER: "1" });
  client = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: async () => stack.token() });
  job = await stack.newJob({ status: "failed" });
  ids = [];
  for (let i = 1; i <= 300; i++) ids.push(await stack.runner.append(job, text(i)));
});
afterAll(async () => {
  await stack?.stop();
});

describe("paging from a permalink", () => {
  it("aroundId opens the page centred on the line, afterId pages forward", async () => {
    const page = await client.getHistoryPage(job, { aroundId: ids[150], limit: 11 });
    expect(page.lines.map((l) => l.id)).toEqual(ids.slice(145, 156));
    expect([page.has_more, page.has_newer]).toEqual([true, true]);
    expect(page.newest_id).toBe(ids[155]);
    expectTypeOf(page.newest_id).toEqualTypeOf<string | null>();
    const later = await client.getHistoryPage(job, { afterId: page.newest_id!, limit: 5 });
    expect(later.lines.map((l) => l.id)).toEqual(ids.slice(156, 161));
  });

  it("historyPages with afterId visits every newer line once, oldest page first", async () => {
    const seen: string[] = [];
    for await (const page of client.historyPages(job, { afterId: ids[199], limit: 40 })) {
      seen.push(...page.lines.map((l) => l.id));
    }
    expect(seen).toEqual(ids.slice(200));
  });

  it("a pager opened at a permalink loads earlier and later from it", async () => {
    const pager = client.historyPager(job, { aroundId: ids[20], limit: 10 });
    expect(pager.hasNewer).toBe(true);
    const view: LogLine[] = [...(await pager.loadLater())];
    expect(view.map((l) => l.id)).toEqual(ids.slice(16, 26));
    while (pager.hasMore) view.unshift(...(await pager.loadEarlier()));
    for (let i = 0; i < 3; i++) view.push(...(await pager.loadLater()));
    expect(view.map((l) => l.id)).toEqual(ids.slice(0, 56));
    expect(pager.hasNewer).toBe(true);
  });

  it("two cursors are a BadRequestError", async () => {
    const error = await client.getHistoryPage(job, { beforeId: ids[3], afterId: ids[1] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BadRequestError);
    expect((error as BadRequestError).code).toBe("invalid_cursor");
  });
});

describe("searchLog", () => {
  it("iterates every match across pages, through colour codes, once", async () => {
    const counter = countingFetch();
    const counted = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: () => stack.token(), fetch: counter.fetch });
    const found: LogLine[] = [];
    for await (const line of counted.searchLog(job, "failed", { limit: 5 })) found.push(line);
    expect(found.map((l) => l.id)).toEqual(ids.filter((_, i) => (i + 1) % 25 === 0));
    expect(found[0]!.text).toBe(text(25));
    expect(counter.requests.length).toBeGreaterThanOrEqual(3);
    expect(counter.requests[0]!.headers.get("authorization")).toMatch(/^Bearer ey/);
  });

  it("takes patterns, case and a start", async () => {
    const page = await client.getSearchPage(job, "^test case_1\\d\\b", { regex: true });
    expect(page.matches.map((l) => l.text)).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19].map(text));
    expect(page.has_more).toBe(false);
    expect(page.scanned_to).toBe(ids[299]);
    const none = await client.getSearchPage(job, "failed", { caseSensitive: true, afterId: ids[280] });
    expect(none.matches).toEqual([]);
    const one = await client.getSearchPage(job, "failed", { afterId: ids[280] });
    expect(one.matches.map((l) => l.id)).toEqual([ids[299]]);
  });

  it("stops when its signal aborts, and bad queries are typed errors", async () => {
    const controller = new AbortController();
    const found: LogLine[] = [];
    const run = (async () => {
      for await (const line of client.searchLog(job, "test", { limit: 10, signal: controller.signal })) {
        found.push(line);
        if (found.length === 15) controller.abort(new Error("enough"));
      }
    })();
    await expect(run).rejects.toThrow("enough");
    expect(found).toHaveLength(15);
    const bad = await client.getSearchPage(job, "a(b", { regex: true }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(BadRequestError);
    expect((bad as BadRequestError).code).toBe("invalid_query");
    const missing = await client.getSearchPage("no-such-job", "x").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(NotFoundError);
  });
});

describe("downloadLog", () => {
  it("returns the whole log as a stream or a Blob, ANSI kept or stripped", async () => {
    const kept = await client.downloadLog(job);
    expectTypeOf(kept).toEqualTypeOf<LogDownload>();
    expect(kept.filename).toBe(`${job}.log`);
    expect(kept.lastId).toBe(ids[299]);
    expect(kept.truncated).toBe(false);
    const chunks: Uint8Array[] = [];
    const reader = kept.body.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(r.value);
    const body = Buffer.concat(chunks).toString("utf8");
    expect(body).toBe(Array.from({ length: 300 }, (_, i) => `${text(i + 1)}\n`).join(""));

    const stripped = await client.downloadLog(job, { ansi: "strip", timestamps: true });
    const blob = await stripped.blob();
    expect(blob.type).toBe("text/plain;charset=utf-8");
    const lines = (await blob.text()).split("\n");
    expect(lines[24]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+\+00:00 test case_25 \.\.\. FAILED$/);
    expect(lines).toHaveLength(301);
  });

  it("holds the user's one slot while it is read, and is authenticated with getToken", async () => {
    const big = await stack.newJob({ status: "ready" });
    // 40 MB: more than the sockets' and the client's buffers hold, so the first download is
    // still being sent while the second asks.
    await stack.runner.appendMany(big, 600, "x".repeat(64 * 1024));
    const first = await client.downloadLog(big);
    const reader = first.body.getReader();
    await reader.read();
    const refused = await client.downloadLog(big).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TooManyRequestsError);
    expect((refused as TooManyRequestsError).code).toBe("too_many_streams");
    await reader.cancel();
    // The slot comes back once the server sees the reader gone.
    let again: LogDownload | undefined;
    for (let i = 0; i < 100 && again === undefined; i++) {
      again = await client.downloadLog(big).catch(() => undefined);
      if (again === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    expect((await again!.text()).split("\n")).toHaveLength(601);

    const anonymous = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: () => null });
    await expect(anonymous.downloadLog(job)).rejects.toBeInstanceOf(UnauthorizedError);
    await expect(client.downloadLog(job, { ansi: "bold" as "keep" })).rejects.toBeInstanceOf(BadRequestError);
  });
});
