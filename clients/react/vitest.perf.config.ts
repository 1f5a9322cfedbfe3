// `npm run perf`: the viewer's performance script (not a test suite): Chromium against the real
// binary, printing a table. Settings through the environment; see perf/viewer.perf.ts.
import { defineConfig } from "vitest/config";

import base from "./vitest.config.js";

export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ["perf/**/*.perf.ts"],
    testTimeout: 15 * 60_000,
    hookTimeout: 5 * 60_000,
    maxWorkers: 1,
  },
});
