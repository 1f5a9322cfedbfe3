import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

import { repoRoot, serverBinary } from "./support/server.js";

/** Makes sure the server binary and redis-server exist before any test file starts. */
export default function setup(): void {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
  } catch {
    throw new Error("redis-server is not installed; the tests start their own (apt-get install redis-server)");
  }
  const bin = serverBinary();
  if (!existsSync(bin)) {
    if (process.env.BUILDLOGS_BIN) throw new Error(`BUILDLOGS_BIN=${bin} does not exist`);
    console.log(`${bin} is missing: running cargo build --bin buildlogs`);
    execFileSync("cargo", ["build", "--bin", "buildlogs"], { cwd: repoRoot, stdio: "inherit" });
  }
}
