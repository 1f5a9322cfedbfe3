// Package hygiene: what npm would publish must agree with itself.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  name: string;
  license?: string;
  private?: boolean;
  publishConfig?: { access?: string };
  files?: string[];
};
const readme = readFileSync(join(root, "README.md"), "utf8");

describe("package.json", () => {
  it("license and publishConfig agree, and the README says why", () => {
    const access = pkg.publishConfig?.access;
    if (pkg.license === "UNLICENSED") {
      // No licence granted: never published for everyone.
      expect(pkg.private === true || access === "restricted").toBe(true);
      expect(access).not.toBe("public");
    } else {
      // Published for everyone: under a real licence, shipped with its text.
      expect(pkg.license).toMatch(/^[A-Za-z0-9.+-]+( (OR|AND) [A-Za-z0-9.+-]+)*$/);
      expect(access).toBe("public");
      expect(existsSync(join(root, "LICENSE"))).toBe(true);
    }
    if (pkg.name.startsWith("@") && !pkg.private) expect(access).toBeDefined(); // scoped: say which
    expect(readme).toMatch(/^## Licence and publishing$/m);
    expect(readme).toContain(`"license": "${pkg.license}"`);
    if (access) expect(readme).toContain(`"access": "${access}"`);
  });
});
