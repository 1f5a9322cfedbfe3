import { fileURLToPath } from "node:url";

import { defineConfig } from "vitest/config";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  resolve: {
    alias: {
      "@buildlogs/client": here("../typescript/src/index.ts"),
      "@buildlogs/react": here("./src/index.ts"),
    },
  },
  test: {
    include: ["test/**/*.test.{ts,tsx}"],
    // The client's: makes sure the server binary and redis-server exist before any file starts.
    globalSetup: ["../typescript/test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file starts its own redis-server and buildlogs (and some a Chromium): a few at a time.
    maxWorkers: 2,
    typecheck: { enabled: false },
    // The hook tests run in happy-dom against a server on another origin, as a page on one would;
    // the server's CORS is tested elsewhere (and in Chromium), so happy-dom does not enforce it.
    environmentOptions: { happyDOM: { settings: { fetch: { disableSameOriginPolicy: true } } } },
  },
});
