// The client against `buildlogs serve --dev`: the embedded store (no Redis), the server's own
// throwaway key and printed token, and its demo job.
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { createBuildlogsClient, type LogLine, NotFoundError } from "../src/index.js";
import { waitFor } from "./support/ports.js";
import { type BuildlogsServer, startServer } from "./support/server.js";

let server: BuildlogsServer;
let token: string;

beforeAll(async () => {
  server = await startServer({ DEV_DEMO_SECS: "2", DEV_JOB_EVERY_SECS: "3600", HEARTBEAT_SECS: "1" }, ["--dev"]);
  token = await waitFor("the printed token", () => /^TOKEN=(\S+)$/m.exec(server.output())?.[1]);
});
afterAll(async () => {
  await server?.stop();
});

describe("serve --dev (embedded store)", () => {
  it("follows the demo job to ready; history above the live part meets it exactly", async () => {
    const client = createBuildlogsClient({ baseUrl: server.baseUrl, getToken: async () => token });
    const live: LogLine[] = [];
    const stream = client.streamJobLogs("demo-1", { onLog: (line) => live.push(line) });
    const end = await stream.finished;
    // The demo may have finished before we connected: then start + done at once.
    expect(end).toEqual({ reason: "done", status: "ready" });
    const pager = stream.historyPager({ limit: 25 });
    const history: LogLine[] = [];
    while (pager.hasMore) history.unshift(...(await pager.loadEarlier()));
    const all: string[] = [];
    for await (const page of client.historyPages("demo-1", { limit: 500 })) all.unshift(...page.lines.map((l) => l.id));
    expect([...history, ...live].map((l) => l.id)).toEqual(all);
    expect(all.length).toBeGreaterThanOrEqual(30);
    expect(live.at(-1)?.text ?? history.at(-1)?.text).toMatch(/Build finished/);
  });

  it("rejects the demo token for a job that does not exist", async () => {
    const client = createBuildlogsClient({ baseUrl: server.baseUrl, getToken: async () => token });
    await expect(client.getHistoryPage("demo-999")).rejects.toBeInstanceOf(NotFoundError);
  });
});
