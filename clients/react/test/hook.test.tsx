// @vitest-environment happy-dom
// useJobLogs against the real binary and a real redis-server: every line once, renders per
// second under a burst, one connection per job (StrictMode, two components), unmount, a job
// change, the maxLines window, an error with its retry; opening at a permalink and paging
// forward into the live tail; search pages.
import { act, cleanup, render, renderHook, waitFor as waitForRender } from "@testing-library/react";
import { type ReactNode, StrictMode } from "react";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { NotFoundError } from "@buildlogs/client";
import { BadRequestError } from "@buildlogs/client";
import { useJobLogs, type UseJobLogsOptions, type UseJobLogsResult, useLogSearch } from "@buildlogs/react";

import { openFeedCount } from "../src/feed.js";
import { countingFetch, openStreams, type Stack, startStack, waitFor, writeAtRate, writeMany } from "./support.js";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ MAX_STREAMS_PER_USER: "1000" });
});
afterAll(async () => {
  await stack?.stop();
});
afterEach(async () => {
  cleanup();
  // Every test leaves no feed and no stream behind (a leak would show in the next one's counts).
  await waitFor("feeds closed", () => openFeedCount() === 0);
  await waitFor("streams closed at the server", async () => (await openStreams(stack.baseUrl)) === 0);
});

function options(extra: Partial<UseJobLogsOptions> = {}): UseJobLogsOptions {
  return { baseUrl: stack.baseUrl, getToken: () => stack.token(), heartbeatIntervalMs: 1_000, ...extra };
}

/** Runs `action` and waits for the state it leads to to be rendered (the hook publishes once per frame). */
async function settled<T>(result: { current: UseJobLogsResult }, action: () => Promise<T>): Promise<T> {
  const before = result.current;
  const value = await act(action);
  await waitForRender(() => {
    expect(result.current).not.toBe(before);
    expect(result.current.loadingLater || result.current.loadingEarlier || result.current.around?.loading).toBeFalsy();
  });
  return value;
}

const ids = (result: UseJobLogsResult) => result.lines.toArray().map((l) => l.id);
const streamRequests = (requests: { url: string }[]) => requests.filter((r) => r.url.endsWith("/logs/stream")).length;

describe("useJobLogs", () => {
  it("holds every line exactly once, history then live, in order", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 120, "before");
    const seen: string[] = [];
    const { result } = renderHook(() => useJobLogs(job, options({ onLine: (line) => seen.push(line.id) })));
    await waitForRender(() => expect(result.current.status).toBe("open"));
    await waitForRender(() => expect(result.current.lines.length).toBe(120));
    expect(result.current.hasEarlier).toBe(false);

    const live = await writeAtRate(stack, job, 300, 600, "live");
    await waitForRender(() => expect(result.current.lines.length).toBe(420));
    expect(ids(result.current)).toEqual(await stack.runner.allIds(job));
    expect(seen).toEqual(live); // onLine: the live lines, once each
    expect(result.current.lines.at(0)?.text).toBe("before 1");
    expect(result.current.lines.at(419)?.text).toBe("live 300");

    await stack.runner.setStatus(job, "ready");
    await waitForRender(() => expect(result.current.final).toBe("ready"));
    expect(result.current.status).toBe("closed");
    expect(result.current.jobStatus).toBe("ready");
    expect(result.current.error).toBeNull();
  });

  it("joins the first page of history to live lines that arrive while it loads", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 50, "before");
    // Lines keep coming while the hook connects and fetches its first page.
    const writing = writeAtRate(stack, job, 300, 500, "during");
    const { result } = renderHook(() => useJobLogs(job, options()));
    await writing;
    await waitForRender(() => expect(result.current.lines.at(result.current.lines.length - 1)?.text).toBe("during 300"));
    expect(ids(result.current)).toEqual(await stack.runner.allIds(job)); // no gap between history and live
    expect(result.current.hasEarlier).toBe(false);
  });

  it("renders at most once per frame under a 2,000 lines/s burst", async () => {
    const job = await stack.newJob({ status: "code" });
    let renders = 0;
    const { result } = renderHook(() => {
      renders += 1;
      return useJobLogs(job, options());
    });
    await waitForRender(() => expect(result.current.status).toBe("open"));
    await waitForRender(() => expect(result.current.hasEarlier).toBe(false)); // the (empty) first page is in

    const before = renders;
    const started = performance.now();
    await writeAtRate(stack, job, 4_000, 2_000, "burst");
    await waitForRender(() => expect(result.current.lines.length).toBe(4_000), { timeout: 10_000 });
    const seconds = (performance.now() - started) / 1000;
    const perSecond = (renders - before) / seconds;
    // A frame is at least 15 ms apart: at most ~67 renders a second, whatever the line rate.
    expect(perSecond).toBeLessThanOrEqual(1000 / 15 + 1);
    // ...and far fewer renders than lines (batched), but it did keep rendering as lines came.
    expect(renders - before).toBeLessThan(4_000 / 10);
    expect(renders - before).toBeGreaterThan(5);
    expect(new Set(ids(result.current)).size).toBe(4_000);
  });

  it("opens one connection under StrictMode's double mount", async () => {
    const job = await stack.newJob({ status: "code" });
    const counting = countingFetch();
    const { result } = renderHook(() => useJobLogs(job, options({ fetch: counting.fetch })), {
      wrapper: ({ children }: { children: ReactNode }) => <StrictMode>{children}</StrictMode>,
    });
    await waitForRender(() => expect(result.current.status).toBe("open"));
    await stack.runner.appendMany(job, 5, "strict");
    await waitForRender(() => expect(result.current.lines.length).toBe(5));
    expect(streamRequests(counting.requests)).toBe(1);
    expect(await openStreams(stack.baseUrl)).toBe(1);
  });

  it("shares one connection between two components watching the same job", async () => {
    const job = await stack.newJob({ status: "code" });
    const counting = countingFetch();
    const seen: Record<string, UseJobLogsResult> = {};
    function Viewer({ name }: { name: string }) {
      seen[name] = useJobLogs(job, options({ fetch: counting.fetch }));
      return null;
    }
    const view = render(
      <StrictMode>
        <Viewer name="a" />
        <Viewer name="b" />
      </StrictMode>,
    );
    await waitForRender(() => expect(seen.a?.status).toBe("open"));
    await stack.runner.appendMany(job, 20, "shared");
    await waitForRender(() => expect(seen.a?.lines.length).toBe(20));
    await waitForRender(() => expect(seen.b?.lines.length).toBe(20));
    expect(ids(seen.a!)).toEqual(ids(seen.b!));
    expect(streamRequests(counting.requests)).toBe(1);
    expect(await openStreams(stack.baseUrl)).toBe(1);

    // One of them leaving keeps the connection; the last one closes it.
    view.rerender(
      <StrictMode>
        <Viewer name="a" />
      </StrictMode>,
    );
    await stack.runner.appendMany(job, 3, "after");
    await waitForRender(() => expect(seen.a?.lines.length).toBe(23));
    expect(await openStreams(stack.baseUrl)).toBe(1);
    view.unmount();
    await waitFor("the stream to close at the server", async () => (await openStreams(stack.baseUrl)) === 0);
    expect(openFeedCount()).toBe(0);
    expect(streamRequests(counting.requests)).toBe(1);
  });

  it("closes the connection on unmount", async () => {
    const job = await stack.newJob({ status: "code" });
    const { result, unmount } = renderHook(() => useJobLogs(job, options()));
    await waitForRender(() => expect(result.current.status).toBe("open"));
    expect(await openStreams(stack.baseUrl)).toBe(1);
    unmount();
    await waitFor("the stream to close at the server", async () => (await openStreams(stack.baseUrl)) === 0);
    expect(openFeedCount()).toBe(0);
  });

  it("switches cleanly when jobId changes", async () => {
    const [a, b] = [await stack.newJob({ status: "code" }), await stack.newJob({ status: "deps" })];
    await writeMany(stack, a, 30, "a");
    await writeMany(stack, b, 10, "b");
    const counting = countingFetch();
    const { result, rerender } = renderHook(({ job }) => useJobLogs(job, options({ fetch: counting.fetch })), {
      initialProps: { job: a },
    });
    await waitForRender(() => expect(result.current.lines.length).toBe(30));
    expect(result.current.jobStatus).toBe("code");

    rerender({ job: b });
    // At once: nothing of job a is shown for job b.
    expect(result.current.lines.length).toBe(0);
    expect(result.current.jobStatus).toBeNull();
    await waitForRender(() => expect(result.current.lines.length).toBe(10));
    expect(result.current.jobStatus).toBe("deps");
    await writeMany(stack, a, 5, "a-late"); // job a's new lines go nowhere
    await stack.runner.appendMany(b, 5, "b-live");
    await waitForRender(() => expect(result.current.lines.length).toBe(15));
    expect(result.current.lines.toArray().every((l) => l.text.startsWith("b"))).toBe(true);
    expect(ids(result.current)).toEqual(await stack.runner.allIds(b));
    await waitFor("job a's stream to close", async () => (await openStreams(stack.baseUrl)) === 1);
    expect(counting.requests.filter((r) => r.url.endsWith(`/${a}/logs/stream`))).toHaveLength(1);
    expect(counting.requests.filter((r) => r.url.endsWith(`/${b}/logs/stream`))).toHaveLength(1);
  });

  it("keeps a maxLines window: the oldest go, Load earlier brings them back, Jump to latest returns", async () => {
    const job = await stack.newJob({ status: "code" });
    const { result } = renderHook(() => useJobLogs(job, options({ maxLines: 100, pageSize: 50 })));
    await waitForRender(() => expect(result.current.status).toBe("open"));
    await waitForRender(() => expect(result.current.hasEarlier).toBe(false));
    const live = await writeAtRate(stack, job, 150, 1_000, "w");
    await waitForRender(() => expect(result.current.lines.at(99)?.id).toBe(live[149]));
    expect(ids(result.current)).toEqual(live.slice(50));
    expect(result.current.hasEarlier).toBe(true); // dropped, so loadable again
    expect(result.current.atLiveEdge).toBe(true);

    // A page above a full window: the newest 50 make room, and the view leaves the live edge.
    await act(() => result.current.loadEarlier());
    await waitForRender(() => expect(result.current.lines.at(0)?.id).toBe(live[0]));
    expect(ids(result.current)).toEqual(live.slice(0, 100));
    expect(result.current.atLiveEdge).toBe(false);
    expect(result.current.hasEarlier).toBe(false);

    // Live lines meanwhile are counted, not held; Jump to latest loads the newest page and goes on live.
    const more = await writeAtRate(stack, job, 20, 1_000, "more");
    await waitForRender(() => expect(result.current.missed).toBe(20));
    expect(result.current.lines.length).toBe(100);
    await act(() => result.current.jumpToLatest());
    await waitForRender(() => expect(result.current.atLiveEdge).toBe(true));
    const all = [...live, ...more];
    expect(ids(result.current)).toEqual(all.slice(-50)); // one page (50), ending at the last live line
    const after = await stack.runner.appendMany(job, 3, "after");
    await waitForRender(() => expect(result.current.lines.at(-1 + result.current.lines.length)?.id).toBe(after[2]));
    expect(ids(result.current)).toEqual([...all, ...after].slice(-53));
  });

  it("reports a final error and starts again on retry", async () => {
    const job = `missing-${process.pid}`;
    const counting = countingFetch();
    const { result } = renderHook(() => useJobLogs(job, options({ fetch: counting.fetch })));
    await waitForRender(() => expect(result.current.error).toBeInstanceOf(NotFoundError));
    expect(result.current.status).toBe("closed");
    expect(streamRequests(counting.requests)).toBe(1); // a 404 is final: no retry loop

    await stack.runner.createJob(job, "user_test", "code");
    act(() => result.current.retry());
    await waitForRender(() => expect(result.current.status).toBe("open"));
    expect(result.current.error).toBeNull();
    await stack.runner.appendMany(job, 2, "back");
    await waitForRender(() => expect(result.current.lines.length).toBe(2));
    expect(streamRequests(counting.requests)).toBe(2);
  });

  it("stays open with no status change across token renewals, every line once", async () => {
    const job = await stack.newJob({ status: "code" });
    const counting = countingFetch();
    const statuses: string[] = [];
    // Tokens of 3 s: the client moves to a fresh one about every 2.25 s.
    const { result } = renderHook(() =>
      useJobLogs(job, options({ fetch: counting.fetch, getToken: () => stack.token(undefined, { ttlSecs: 3 }), onStatusChange: (s) => statuses.push(s) })),
    );
    await waitForRender(() => expect(result.current.status).toBe("open"));
    const live = await writeAtRate(stack, job, 350, 50, "renew");
    await waitForRender(() => expect(result.current.lines.length).toBe(350));
    expect(ids(result.current)).toEqual(live);
    expect(streamRequests(counting.requests)).toBeGreaterThanOrEqual(3); // it did renew, more than once
    expect(statuses).toEqual(["connecting", "open"]); // and nobody saw it
    expect(result.current.error).toBeNull();
  }, 30_000);

  it("without initialHistory, starts live and offers the history above", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 30, "old");
    const { result } = renderHook(() => useJobLogs(job, options({ initialHistory: false, pageSize: 20 })));
    await waitForRender(() => expect(result.current.hasEarlier).toBe(true));
    expect(result.current.lines.length).toBe(0);
    const live = await stack.runner.appendMany(job, 2, "new");
    await waitForRender(() => expect(result.current.lines.length).toBe(2));
    await act(() => result.current.loadEarlier());
    await waitForRender(() => expect(result.current.lines.length).toBe(22));
    expect(result.current.hasEarlier).toBe(true);
    await act(() => result.current.loadEarlier());
    await waitForRender(() => expect(result.current.hasEarlier).toBe(false));
    expect(ids(result.current)).toEqual(await stack.runner.allIds(job));
    expect(ids(result.current).slice(-2)).toEqual(live);
  });

  it("opens at a permalink and pages forward into the live tail: every line once, lines written meanwhile included", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 1_000, "old");
    const written = await stack.runner.allIds(job);
    const target = written[400]!;
    const counting = countingFetch();
    const { result } = renderHook(() =>
      useJobLogs(job, options({ pageSize: 100, initialLineId: target, fetch: counting.fetch })),
    );
    await waitForRender(() => expect(result.current.around).toMatchObject({ id: target, loading: false, found: true }));
    // The page around it: about half before, the rest after; older and newer lines both remain.
    const opened = ids(result.current);
    expect(opened).toHaveLength(100);
    expect(opened).toEqual(written.slice(written.indexOf(opened[0]!), written.indexOf(opened[0]!) + 100));
    expect(opened.indexOf(target)).toBeGreaterThan(30);
    expect(opened.indexOf(target)).toBeLessThan(70);
    expect(result.current.hasEarlier).toBe(true);
    expect(result.current.hasLater).toBe(true);
    expect(result.current.atLiveEdge).toBe(false);
    // No "latest lines" page was loaded: the stream's start did not pull the view away.
    const historyUrls = () => counting.requests.filter((r) => /\/logs\?/.test(r.url)).map((r) => new URL(r.url).search);
    expect(historyUrls().every((q) => q.includes("around_id") || q.includes("after_id"))).toBe(true);

    // Live lines keep coming while the reader pages down: none is held until the view joins.
    await waitForRender(() => expect(result.current.status).toBe("open"));
    const writing = writeAtRate(stack, job, 400, 400, "live");
    await waitForRender(() => expect(result.current.missed).toBeGreaterThan(0));
    let pages = 0;
    while (result.current.hasLater) {
      await settled(result, () => result.current.loadLater());
      pages += 1;
      expect(pages).toBeLessThan(50);
    }
    expect(pages).toBeGreaterThanOrEqual(6); // 600 old lines below the permalink, 100 a page
    expect(result.current.atLiveEdge).toBe(true);
    await writing;
    const after = await stack.runner.appendMany(job, 5, "after");
    await waitForRender(() => expect(result.current.lines.at(result.current.lines.length - 1)?.id).toBe(after[4]));
    const all = await stack.runner.allIds(job);
    expect(ids(result.current)).toEqual(all.slice(all.indexOf(opened[0]!))); // no gap, no duplicate
    expect(historyUrls().filter((q) => q.includes("after_id")).length).toBe(pages);

    // And up to the first line: the whole log, once.
    while (result.current.hasEarlier) await settled(result, () => result.current.loadEarlier());
    expect(ids(result.current)).toEqual(all);
  }, 30_000);

  it("opens a trimmed or never-written line where it would stand", async () => {
    const job = await stack.newJob({ status: "code" });
    await writeMany(stack, job, 300, "t");
    const written = await stack.runner.allIds(job);
    await stack.redis.client.sendCommand(["XTRIM", `job:${job}:logs`, "MAXLEN", "=", "200"]);
    const { result } = renderHook(() => useJobLogs(job, options({ pageSize: 50 })));
    await waitForRender(() => expect(result.current.status).toBe("open"));
    await waitForRender(() => expect(result.current.lines.length).toBe(50));

    // Trimmed: the page opens at the oldest retained line, the line itself is not there.
    let opened = await settled(result, () => result.current.openAround(written[10]!));
    expect(opened).toEqual({ found: false, index: 0 });
    expect(result.current.around).toMatchObject({ id: written[10], found: false, loading: false });
    expect(result.current.lines.at(0)?.id).toBe(written[100]);
    expect(result.current.hasEarlier).toBe(false);
    expect(result.current.hasLater).toBe(true);

    // Never written (after the newest line): the last lines, and the view is back on the live tail.
    opened = await settled(result, () => result.current.openAround("99999999999999-0"));
    expect(opened.found).toBe(false);
    expect(opened.index).toBe(result.current.lines.length);
    expect(result.current.lines.at(result.current.lines.length - 1)?.id).toBe(written[299]);
    expect(result.current.atLiveEdge).toBe(true);
    const live = await stack.runner.appendMany(job, 3, "live");
    await waitForRender(() => expect(result.current.lines.at(result.current.lines.length - 1)?.id).toBe(live[2]));

    // Not an id at all: refused before any request, and the view stays where it was.
    await expect(result.current.openAround("L12")).rejects.toThrow(/line id/);
    expect(result.current.atLiveEdge).toBe(true);
  });

  it("useLogSearch reports every match once across pages, and a bad pattern as the server's 400", async () => {
    const job = await stack.newJob({ status: "code" });
    const texts = Array.from({ length: 600 }, (_, i) => (i % 5 === 0 ? `\u001b[1mWARN\u001b[0m step ${i}` : `ok step ${i}`));
    for (let start = 0; start < texts.length; start += 200) {
      await Promise.all(texts.slice(start, start + 200).map((text) => stack.runner.append(job, text)));
    }
    const ids = await stack.runner.allIds(job);
    const expected = ids.filter((_, i) => i % 5 === 0); // 120 matches
    const counting = countingFetch();
    const { result, rerender } = renderHook(
      ({ query, regex }) => useLogSearch(job, query, { ...options({ fetch: counting.fetch }), pageSize: 50, debounceMs: 0, regex }),
      { initialProps: { query: "warn", regex: false } },
    );
    // The first page: 50 of 120+, nothing chosen yet.
    await waitForRender(() => expect(result.current.matches).toHaveLength(50));
    expect(result.current.complete).toBe(false);
    expect(result.current.current).toBe(-1);
    // Next through all of them: each page once, every match once, in order, then back to the first.
    const visited: string[] = [];
    for (let i = 0; i < expected.length; i++) {
      const match = await act(() => result.current.next());
      visited.push(match!.id);
    }
    expect(visited).toEqual(expected);
    await waitForRender(() => expect(result.current.complete).toBe(true));
    expect(result.current.matches.map((m) => m.id)).toEqual(expected);
    expect(result.current.current).toBe(expected.length - 1);
    expect(counting.requests.filter((r) => r.url.includes("/logs/search"))).toHaveLength(3);
    expect((await act(() => result.current.next()))?.id).toBe(expected[0]);
    expect((await act(() => result.current.previous()))?.id).toBe(expected.at(-1));

    // Previous first, on a fresh search: it loads the remaining pages and lands on the last.
    rerender({ query: "WARN step", regex: false });
    await waitForRender(() => expect(result.current.query).toBe("WARN step"));
    expect((await act(() => result.current.previous()))?.id).toBe(expected.at(-1));
    expect(result.current.matches.map((m) => m.id)).toEqual(expected);

    rerender({ query: "warn (", regex: true });
    await waitForRender(() => expect(result.current.error).toBeInstanceOf(BadRequestError));
    expect(result.current.error?.message).toMatch(/regex|pattern|parse/i);
    expect(result.current.complete).toBe(true);
    expect(result.current.matches).toHaveLength(0);
  });

  it("does nothing without a job", () => {
    const { result } = renderHook(() => useJobLogs(null, options()));
    expect(result.current.status).toBe("idle");
    expect(result.current.lines.length).toBe(0);
    expect(openFeedCount()).toBe(0);
  });
});
