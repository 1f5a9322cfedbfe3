import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from "vitest";

import {
  BadRequestError,
  type BuildlogsClient,
  BuildlogsError,
  type components,
  createBuildlogsClient,
  type HistoryPage,
  type LogLine,
  NotFoundError,
  UnauthorizedError,
} from "../src/index.js";
import { countingFetch, OTHER_USER, type Stack, startStack } from "./support/stack.js";

let stack: Stack;
let client: BuildlogsClient;
let job: string;
let ids: string[];

beforeAll(async () => {
  stack = await startStack();
  client = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: async () => stack.token() });
  job = await stack.newJob({ status: "ready" });
  ids = await stack.runner.appendMany(job, 250, "history");
});
afterAll(async () => {
  await stack?.stop();
});

describe("history", () => {
  it("fetches a typed page: newest lines, oldest first", async () => {
    const page = await client.getHistoryPage(job, { limit: 100 });
    expectTypeOf(page).toEqualTypeOf<HistoryPage>();
    // Required and nullable, whether or not the spec in use marks it optional.
    expectTypeOf(page.oldest_id).toEqualTypeOf<string | null>();
    expectTypeOf(page.lines).toEqualTypeOf<components["schemas"]["LogLine"][]>();
    expect(page.has_more).toBe(true);
    expect(page.lines.map((l) => l.id)).toEqual(ids.slice(150));
    expect(page.oldest_id).toBe(ids[150]);
    const first = page.lines[0]!;
    expect(first).toEqual({
      id: ids[150],
      ts: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/),
      source: "stdout",
      text: "history 151",
      phase: "build",
    });
  });

  it("the raw openapi-fetch client is typed and authenticated too", async () => {
    const { data, error } = await client.api.GET("/api/jobs/{job_id}/logs", {
      params: { path: { job_id: job }, query: { limit: 3 } },
    });
    expect(error).toBeUndefined();
    expectTypeOf(data).toEqualTypeOf<components["schemas"]["HistoryPage"] | undefined>();
    expect(data?.lines.map((l) => l.text)).toEqual(["history 248", "history 249", "history 250"]);
  });

  it("historyPages visits every line exactly once, newest page first", async () => {
    const pages: HistoryPage[] = [];
    for await (const page of client.historyPages(job, { limit: 100 })) pages.push(page);
    expect(pages.map((p) => p.lines.length)).toEqual([100, 100, 50]);
    expect(pages.map((p) => p.has_more)).toEqual([true, true, false]);
    const all = pages.reverse().flatMap((p) => p.lines.map((l) => l.id));
    expect(all).toEqual(ids);
  });

  it("a pager's loadEarlier returns older pages to prepend, then nothing", async () => {
    const pager = client.historyPager(job, { limit: 100, beforeId: ids[200] });
    const view: LogLine[] = [];
    const sizes: number[] = [];
    while (pager.hasMore) {
      const lines = await pager.loadEarlier();
      sizes.push(lines.length);
      view.unshift(...lines);
    }
    expect(sizes).toEqual([100, 100]);
    expect(view.map((l) => l.id)).toEqual(ids.slice(0, 200));
    expect(await pager.loadEarlier()).toEqual([]);
  });

  it("concurrent loadEarlier calls never fetch the same page twice", async () => {
    const pager = client.historyPager(job, { limit: 60 });
    const [a, b, c] = await Promise.all([pager.loadEarlier(), pager.loadEarlier(), pager.loadEarlier()]);
    const got = [...c!, ...b!, ...a!].map((l) => l.id);
    expect(got).toEqual(ids.slice(250 - 180));
  });

  it("a job with no stream yet has an empty page", async () => {
    const empty = await stack.newJob();
    const page = await client.getHistoryPage(empty);
    expect(page.lines).toEqual([]);
    expect(page.has_more).toBe(false);
    expect(page.oldest_id).toBeNull();
    const pager = client.historyPager(empty);
    expect(await pager.loadEarlier()).toEqual([]);
    expect(pager.hasMore).toBe(false);
  });

  it("401: typed UnauthorizedError with the problem body, one request, no retry", async () => {
    const counter = countingFetch();
    const bad = createBuildlogsClient({
      baseUrl: stack.baseUrl,
      getToken: async () => "not-a-jwt",
      fetch: counter.fetch,
    });
    const error = await bad.getHistoryPage(job).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnauthorizedError);
    expect(error).toBeInstanceOf(BuildlogsError);
    const e = error as UnauthorizedError;
    expect(e.status).toBe(401);
    expect(e.kind).toBe("unauthorized");
    expect(e.code).toBe("unauthorized");
    expect(e.problem).toMatchObject({ status: 401, code: "unauthorized", type: "urn:buildlogs:error:unauthorized" });
    expect(e.retryable).toBe(false);
    expect(counter.requests).toHaveLength(1);
    expect(counter.requests[0]!.headers.get("authorization")).toBe("Bearer not-a-jwt");
  });

  it("401 with no token at all (getToken returns null)", async () => {
    const anonymous = createBuildlogsClient({ baseUrl: stack.baseUrl, getToken: async () => null });
    await expect(anonymous.getHistoryPage(job)).rejects.toBeInstanceOf(UnauthorizedError);
  });

  it("404 for a missing job and for someone else's job, alike", async () => {
    const missing = await client.getHistoryPage("no-such-job").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(NotFoundError);
    expect((missing as NotFoundError).code).toBe("job_not_found");
    const theirs = await stack.newJob({ user: OTHER_USER });
    await stack.runner.append(theirs, "secret");
    const notMine = await client.getHistoryPage(theirs).catch((e: unknown) => e);
    expect(notMine).toBeInstanceOf(NotFoundError);
    expect((notMine as NotFoundError).problem).toEqual((missing as NotFoundError).problem);
  });

  it("400 for a malformed cursor or limit", async () => {
    const cursor = await client.getHistoryPage(job, { beforeId: "12" }).catch((e: unknown) => e);
    expect(cursor).toBeInstanceOf(BadRequestError);
    expect((cursor as BadRequestError).code).toBe("invalid_cursor");
    const limit = await client.getHistoryPage(job, { limit: 501 }).catch((e: unknown) => e);
    expect(limit).toBeInstanceOf(BadRequestError);
    expect((limit as BadRequestError).code).toBe("invalid_limit");
  });
});
