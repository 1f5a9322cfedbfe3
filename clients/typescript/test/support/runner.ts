import type { RedisClient } from "./redis.js";

/**
 * Writes jobs and log lines exactly as the job runner does (contract section 1): the job hash,
 * `XADD ... MAXLEN ~ 50000` with `ts`, `source`, `text`, `phase`, a 24 h `EXPIRE`, and a status
 * event on Pub/Sub at every transition.
 */
export class FakeRunner {
  constructor(private readonly redis: RedisClient) {}

  static timestamp(at = new Date()): string {
    // 2026-11-24T03:05:57.123456+00:00
    return at.toISOString().replace(/\.(\d{3})Z$/, ".$1000+00:00");
  }

  async createJob(jobId: string, userId: string, status = "queued"): Promise<void> {
    const now = FakeRunner.timestamp();
    await this.redis.sendCommand([
      "HSET",
      `job:${jobId}`,
      "user_id",
      userId,
      "status",
      status,
      "status_message",
      "",
      "created_at",
      now,
      "updated_at",
      now,
      "project_id",
      "proj_test",
      "tier",
      "free",
      "goal",
      "test the client",
    ]);
  }

  async setStatus(jobId: string, status: string, message = ""): Promise<void> {
    const now = FakeRunner.timestamp();
    await this.redis.sendCommand([
      "HSET",
      `job:${jobId}`,
      "status",
      status,
      "status_message",
      message,
      "updated_at",
      now,
    ]);
    await this.redis.sendCommand([
      "PUBLISH",
      `job:${jobId}:events`,
      JSON.stringify({ job_id: jobId, status, message, timestamp: now }),
    ]);
  }

  /** Appends one line; returns its stream id. */
  async append(jobId: string, text: string, source = "stdout", phase = "build"): Promise<string> {
    const key = `job:${jobId}:logs`;
    const id = (await this.redis.sendCommand([
      "XADD",
      key,
      "MAXLEN",
      "~",
      "50000",
      "*",
      "ts",
      FakeRunner.timestamp(),
      "source",
      source,
      "text",
      text,
      "phase",
      phase,
    ])) as string;
    await this.redis.sendCommand(["EXPIRE", key, String(24 * 60 * 60)]);
    return id;
  }

  /** Appends `count` lines `${prefix} 1..count`, `intervalMs` apart; returns their ids. */
  async appendMany(jobId: string, count: number, prefix = "line", intervalMs = 0): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 1; i <= count; i++) {
      ids.push(await this.append(jobId, `${prefix} ${i}`));
      if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
    }
    return ids;
  }

  /** Every retained line id, oldest first (XRANGE), for comparisons. */
  async allIds(jobId: string): Promise<string[]> {
    const entries = (await this.redis.sendCommand(["XRANGE", `job:${jobId}:logs`, "-", "+"])) as [
      string,
      string[],
    ][];
    return entries.map(([id]) => id);
  }
}
