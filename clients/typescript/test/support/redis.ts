import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { createClient } from "redis";

import { freePort } from "./ports.js";

/** The little of a Redis client the tests use. */
export interface RedisClient {
  sendCommand(args: string[]): Promise<unknown>;
}

/** A `redis-server` of the test's own on a free port. */
export interface RedisServer {
  url: string;
  client: RedisClient;
  /** Kills the server (an outage); `restart` brings it back on the same port with its data. */
  kill(): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function launch(port: number, dir: string): Promise<ChildProcess> {
  const child = spawn(
    "redis-server",
    [
      "--port", String(port), "--bind", "127.0.0.1", "--save", "",
      // Persistent, so that a restart keeps the data (outage tests).
      "--appendonly", "yes", "--appendfsync", "always", "--dir", dir,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  return new Promise((resolve, reject) => {
    let output = "";
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ready to accept connections")) {
        child.stdout?.off("data", onData);
        child.stdout?.resume();
        resolve(child);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.resume();
    child.once("error", (error) =>
      reject(new Error(`cannot start redis-server (apt-get install redis-server): ${error.message}`)),
    );
    child.once("exit", (code) => reject(new Error(`redis-server exited (${code}): ${output}`)));
  });
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "buildlogs-ts-redis-"));
  let child = await launch(port, dir);
  const url = `redis://127.0.0.1:${port}/`;
  const client = createClient({ url, socket: { reconnectStrategy: () => 100 } });
  client.on("error", () => undefined);
  await client.connect();
  return {
    url,
    client,
    kill: () => kill(child),
    async restart() {
      await kill(child);
      child = await launch(port, dir);
    },
    async stop() {
      client.destroy();
      await kill(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
