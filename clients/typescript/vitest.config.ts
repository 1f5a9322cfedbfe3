import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["./test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file starts its own redis-server and buildlogs; a few at a time keeps a 2-core box calm.
    maxWorkers: 3,
    typecheck: { enabled: false },
  },
});
