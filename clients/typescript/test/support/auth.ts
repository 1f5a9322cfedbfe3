import { createSign, generateKeyPairSync, type KeyObject } from "node:crypto";

/** An RS256 key pair standing in for a Clerk instance: the server trusts its public half. */
export interface TestKeys {
  publicPem: string;
  privateKey: KeyObject;
}

export function generateKeys(): TestKeys {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(), privateKey };
}

const b64url = (value: string | Buffer) => Buffer.from(value).toString("base64url");

export interface TokenOptions {
  /** Seconds from now until `exp` (default 600). */
  ttlSecs?: number;
  /** Extra or overriding claims. */
  claims?: Record<string, unknown>;
}

/** A Clerk-shaped session token (RS256, `sub`, `exp`, `nbf`, `iat`) for `user`. */
export function signToken(keys: TestKeys, user: string, options: TokenOptions = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: "RS256", typ: "JWT", kid: "test" };
  const claims = {
    sub: user,
    iat: now,
    nbf: now - 1,
    exp: now + (options.ttlSecs ?? 600),
    sid: "sess_test",
    ...options.claims,
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = createSign("RSA-SHA256").update(input).sign(keys.privateKey);
  return `${input}.${b64url(signature)}`;
}
