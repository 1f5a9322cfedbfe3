// The package as npm would ship it: built with tsc, imported in plain Node (no DOM: nothing may
// touch window or document at import), rendered on the server, with exports and sideEffects set.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  name: string;
  license: string;
  sideEffects: boolean;
  exports: Record<string, Record<string, string>>;
  peerDependencies: Record<string, string>;
  dependencies: Record<string, string>;
  publishConfig?: { access?: string };
};

describe("@buildlogs/react as published", () => {
  it("declares ESM exports, no side effects, react as a peer and the client as a dependency", () => {
    expect(pkg.name).toBe("@buildlogs/react");
    expect(pkg.sideEffects).toBe(false);
    expect(pkg.exports["."]).toEqual({ types: "./dist/index.d.ts", import: "./dist/index.js", default: "./dist/index.js" });
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual(["react", "react-dom"]);
    expect(pkg.dependencies["@buildlogs/client"]).toBeDefined();
    expect(pkg.dependencies.react).toBeUndefined();
    // As the client: no licence granted, never published for everyone.
    expect(pkg.license).toBe("UNLICENSED");
    expect(pkg.publishConfig?.access).toBe("restricted");
  });

  it("imports in plain Node and renders on the server without opening anything", { timeout: 120_000 }, () => {
    execFileSync("npm", ["run", "build"], { cwd: root, stdio: "pipe" });
    const script = `
      for (const name of ["window", "document", "requestAnimationFrame", "HTMLElement"]) {
        if (name in globalThis) throw new Error(name + " exists in plain Node");
      }
      const lib = await import("@buildlogs/react");
      const { createElement } = await import("react");
      const { renderToString } = await import("react-dom/server");
      let fetches = 0;
      globalThis.fetch = async () => { fetches += 1; throw new Error("no fetch on the server"); };
      const html = renderToString(createElement(lib.BuildLog, { jobId: "job-1", baseUrl: "http://127.0.0.1:1", getToken: () => "t" }));
      const Hook = () => {
        const logs = lib.useJobLogs("job-1", { baseUrl: "http://127.0.0.1:1" });
        const search = lib.useLogSearch("job-1", "error", { baseUrl: "http://127.0.0.1:1" });
        return createElement("p", null, logs.status + ":" + logs.lines.length + ":" + search.matches.length);
      };
      const hookHtml = renderToString(createElement(Hook));
      await new Promise((r) => setTimeout(r, 50));
      console.log(JSON.stringify({ exports: Object.keys(lib).sort(), html, hookHtml, fetches }));
    `;
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { cwd: root, encoding: "utf8" });
    const result = JSON.parse(out) as { exports: string[]; html: string; hookHtml: string; fetches: number };
    expect(result.exports).toEqual([
      "BuildLog",
      "DEFAULT_MAX_LINES",
      "DEFAULT_PAGE_SIZE",
      "parseAnsi",
      "useBuildlogsClient",
      "useJobLogs",
      "useLogSearch",
    ]);
    expect(result.fetches).toBe(0);
    expect(result.hookHtml).toBe("<p>connecting:0:0</p>");
    expect(result.html).toContain('role="log"');
    expect(result.html).toContain('class="bl-root"');
    expect(result.html).toContain("Job job-1");
    // The stylesheet travels with the markup, scoped to the component's own classes.
    expect(result.html).toMatch(/<style[^>]*>[^<]*\.bl-root \{/);
  });

  it("never builds HTML from strings: no innerHTML anywhere in the sources", () => {
    const sources = readdirSync(join(root, "src"));
    expect(sources).toContain("BuildLog.tsx");
    for (const file of sources) {
      const text = readFileSync(join(root, "src", file), "utf8");
      expect(text, file).not.toMatch(/dangerouslySetInnerHTML|innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    }
  });

  it("ships no global CSS: every rule is scoped under .bl-root", async () => {
    const { CSS } = await import("../src/styles.js");
    const selectors = CSS.replace(/\{[^{}]*\}/g, "")
      .split(/[\n,]/)
      .map((s) => s.trim())
      .filter((s) => s && !s.startsWith("@media") && s !== "}");
    expect(selectors.length).toBeGreaterThan(20);
    for (const selector of selectors) expect(selector).toMatch(/^\.bl-root\b/);
  });
});
