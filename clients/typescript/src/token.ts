/**
 * What the client reads from a session token without verifying it: when it expires, so that the
 * stream can move to a fresh token before the server ends it. The server verifies; this only
 * schedules.
 */
export interface TokenExpiry {
  /** The token's `exp`, in ms since the epoch. */
  expiresAt: number;
  /** `exp - iat` in ms, when the token carries a usable `iat`. */
  lifetimeMs: number | undefined;
}

function base64UrlToBytes(segment: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(segment)) return undefined;
  const base64 = segment.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  try {
    const binary = atob(padded);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch {
    return undefined;
  }
}

/**
 * The `exp` (and `iat`) of a JWT, read from its payload. `undefined` for anything else: no token,
 * not three dot-separated parts, a payload that is not base64url JSON, or no numeric `exp`.
 */
export function tokenExpiry(token: string | null | undefined): TokenExpiry | undefined {
  if (!token) return undefined;
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  const bytes = base64UrlToBytes(parts[1]!);
  if (!bytes) return undefined;
  let claims: unknown;
  try {
    claims = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
  if (typeof claims !== "object" || claims === null) return undefined;
  const { exp, iat } = claims as { exp?: unknown; iat?: unknown };
  if (typeof exp !== "number" || !Number.isFinite(exp)) return undefined;
  const lifetime = typeof iat === "number" && Number.isFinite(iat) && iat < exp ? (exp - iat) * 1000 : undefined;
  return { expiresAt: exp * 1000, lifetimeMs: lifetime };
}
