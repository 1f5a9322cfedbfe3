/**
 * Names for the generated schema types. Every payload type here is an alias of
 * `components["schemas"][...]` from `generated/schema.ts` (generated from `openapi/openapi.json`),
 * never a hand-written interface: regenerate with `npm run generate` when the spec changes.
 * The one adjustment: `oldest_id` (and a page's `newest_id`) is always present, `string | null`,
 * as the server sends it, whether or not the spec in use marks it optional (the client fills in
 * `null` if it is missing).
 */
import type { components, operations, paths } from "./generated/schema.js";

export type { components, operations, paths };

type Schemas = components["schemas"];

/** `T` as one flat object type (no intersection left in editor tooltips or type comparisons). */
type Flat<T> = { [K in keyof T]: T[K] } & {};
/** `T` with `oldest_id` required and nullable. */
type WithOldestId<T> = Flat<Omit<T, "oldest_id"> & { oldest_id: string | null }>;

/** One log line (`event: log` data, and an item of a history page). */
export type LogLine = Schemas["LogLine"];
/**
 * A page of history, oldest line first. `oldest_id` / `newest_id`: the first and last line's ids,
 * null when `lines` is empty; `has_more` / `has_newer`: whether older / newer lines exist.
 */
export type HistoryPage = Flat<
  Omit<Schemas["HistoryPage"], "oldest_id" | "newest_id"> & {
    oldest_id: string | null;
    newest_id: string | null;
  }
>;
/**
 * A page of search matches, oldest first. `scanned_to`: the last line examined (null when none
 * was); `has_more`: whether lines after it remain to be searched.
 */
export type SearchPage = Flat<Omit<Schemas["SearchPage"], "scanned_to"> & { scanned_to: string | null }>;
/** `event: start` data. */
export type StartData = Schemas["StartData"];
/** `event: heartbeat` data (`{}`). */
export type HeartbeatData = Schemas["HeartbeatData"];
/** `event: done` data. */
export type DoneData = Schemas["DoneData"];
/**
 * Why a resume could not be honoured exactly: `trimmed` (lines after the resume point may be gone)
 * or `unknown_position` (the stream never had that position, e.g. it was deleted and written
 * anew: every retained line follows). Listed here as well as in the spec so that code handling
 * both compiles against either version of it.
 */
export type ResetReason = Schemas["ResetReason"] | "unknown_position";
/** `event: reset` data. `oldest_id`: the oldest retained line's id, null when none is retained. */
export type ResetData = Flat<Omit<WithOldestId<Schemas["ResetData"]>, "reason"> & { reason: ResetReason }>;
/** The `retry:` field, as the spec describes it. */
export type RetryData = Schemas["RetryData"];
/** `ready` or `failed`. */
export type FinalStatus = Schemas["FinalStatus"];
/** An error body (RFC 9457 problem details). */
export type Problem = Schemas["Problem"];
/** A stable, machine-readable error code. */
export type ErrorCode = Schemas["ErrorCode"];
