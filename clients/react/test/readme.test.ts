// The READMEs' examples compile: every ```tsx block is type-checked against the package's
// sources (Clerk's useAuth is declared in test/clerk.d.ts, as @clerk/clerk-react types it).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { expect, it } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

it("README examples type-check", { timeout: 120_000 }, () => {
  // This package's README, and the repository's React section.
  const readmes = [join(root, "README.md"), join(root, "..", "..", "README.md")].map((p) => readFileSync(p, "utf8"));
  const blocks = readmes.flatMap((readme) => [...readme.matchAll(/```tsx\n([\s\S]*?)```/g)].map((m) => m[1]!));
  expect(blocks.length).toBeGreaterThanOrEqual(4);
  const dir = join(root, "test-output", "readme");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  blocks.forEach((code, i) => writeFileSync(join(dir, `example-${i + 1}.tsx`), code));
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      extends: "../../tsconfig.json",
      compilerOptions: { noUnusedLocals: false },
      include: ["./*.tsx", "../../test/clerk.d.ts"],
    }),
  );
  execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(dir, "tsconfig.json")], {
    cwd: root,
    encoding: "utf8",
  });
});
