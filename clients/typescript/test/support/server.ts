import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { freePort, waitFor } from "./ports.js";

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const repoRoot = resolve(packageRoot, "..", "..");

/** The server binary under test: `BUILDLOGS_BIN`, or the workspace's debug build. */
export function serverBinary(): string {
  return process.env.BUILDLOGS_BIN ?? resolve(repoRoot, "target", "debug", "buildlogs");
}

export function assertBinary(): string {
  const bin = serverBinary();
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run \`cargo build --bin buildlogs\` in ${repoRoot} (or set BUILDLOGS_BIN)`);
  }
  return bin;
}

export interface BuildlogsServer {
  baseUrl: string;
  port: number;
  /** Everything the server printed (stdout and stderr), for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts `buildlogs serve` with `env` on top of a minimal environment, on `port` (e.g. to restart a
 * server where its clients expect it) or a free one.
 */
export async function startServer(
  env: Record<string, string>,
  args: string[] = [],
  port?: number,
): Promise<BuildlogsServer> {
  const bin = assertBinary();
  port ??= await freePort();
  let output = "";
  const child: ChildProcess = spawn(bin, ["serve", ...args], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      RUST_LOG: process.env.BUILDLOGS_RUST_LOG ?? "warn",
      LISTEN_ADDR: `127.0.0.1:${port}`,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      "buildlogs /readyz",
      async () => {
        if (exited) throw new Error(`buildlogs exited:\n${output}`);
        const response = await fetch(`${baseUrl}/readyz`);
        return response.status === 200 ? true : undefined;
      },
      20_000,
    );
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return {
    baseUrl,
    port,
    output: () => output,
    async stop() {
      if (exited) return;
      const done = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await done;
      clearTimeout(timer);
    },
  };
}

/** The `buildlogs_open_streams` gauge from `/metrics`. */
export async function openStreams(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const match = /^buildlogs_open_streams(?:\{[^}]*\})?\s+(\d+(?:\.\d+)?)/m.exec(text);
  if (!match) throw new Error("no buildlogs_open_streams in /metrics");
  return Number(match[1]);
}
