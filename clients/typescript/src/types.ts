/**
 * Names for the generated schema types. Every payload type here is an alias of
 * `components["schemas"][...]` from `generated/schema.ts` (generated from `openapi/openapi.json`),
 * never a hand-written interface: regenerate with `npm run generate` when the spec changes.
 */
import type { components, operations, paths } from "./generated/schema.js";

export type { components, operations, paths };

type Schemas = components["schemas"];

/** One log line (`event: log` data, and an item of a history page). */
export type LogLine = Schemas["LogLine"];
/** A page of history, oldest line first. */
export type HistoryPage = Schemas["HistoryPage"];
/** `event: start` data. */
export type StartData = Schemas["StartData"];
/** `event: heartbeat` data (`{}`). */
export type HeartbeatData = Schemas["HeartbeatData"];
/** `event: done` data. */
export type DoneData = Schemas["DoneData"];
/** `event: reset` data. */
export type ResetData = Schemas["ResetData"];
/** The `retry:` field, as the spec describes it. */
export type RetryData = Schemas["RetryData"];
/** `ready` or `failed`. */
export type FinalStatus = Schemas["FinalStatus"];
/** An error body (RFC 9457 problem details). */
export type Problem = Schemas["Problem"];
/** A stable, machine-readable error code. */
export type ErrorCode = Schemas["ErrorCode"];
