import { generateKeys, signToken, type TestKeys, type TokenOptions } from "./auth.js";
import { startRedis, type RedisServer } from "./redis.js";
import { FakeRunner } from "./runner.js";
import { type BuildlogsServer, startServer } from "./server.js";

export const USER = "user_test";
export const OTHER_USER = "user_other";

/** A real redis-server, the buildlogs binary trusting a test key, and a fake job runner. */
export interface Stack {
  redis: RedisServer;
  server: BuildlogsServer;
  baseUrl: string;
  keys: TestKeys;
  runner: FakeRunner;
  /** A valid token for `user` (default {@link USER}). */
  token(user?: string, options?: TokenOptions): string;
  /** A unique job id (per stack) owned by `user`, created `queued` or with `status`. */
  newJob(options?: { user?: string; status?: string; prefix?: string }): Promise<string>;
  stop(): Promise<void>;
}

let jobCounter = 0;

export async function startStack(env: Record<string, string> = {}): Promise<Stack> {
  const keys = generateKeys();
  const redis = await startRedis();
  let server: BuildlogsServer;
  try {
    server = await startServer({
      REDIS_URL: redis.url,
      CLERK_JWT_KEY: keys.publicPem,
      HEARTBEAT_SECS: "1",
      STATUS_POLL_SECS: "1",
      ...env,
    });
  } catch (error) {
    await redis.stop();
    throw error;
  }
  const runner = new FakeRunner(redis.client);
  return {
    redis,
    server,
    baseUrl: server.baseUrl,
    keys,
    runner,
    token: (user = USER, options) => signToken(keys, user, options),
    async newJob(options = {}) {
      jobCounter += 1;
      const id = `${options.prefix ?? "job"}-${process.pid}-${jobCounter}`;
      await runner.createJob(id, options.user ?? USER, options.status ?? "queued");
      return id;
    },
    async stop() {
      await server.stop();
      await redis.stop();
    },
  };
}

/** A `fetch` that records every request it makes (URL, method, headers, time). */
export function countingFetch() {
  const requests: { url: string; method: string; headers: Headers; at: number }[] = [];
  const fetchImpl: typeof fetch = (input, init) => {
    const request = new Request(input, init);
    requests.push({ url: request.url, method: request.method, headers: request.headers, at: Date.now() });
    return fetch(request);
  };
  return { fetch: fetchImpl, requests };
}
