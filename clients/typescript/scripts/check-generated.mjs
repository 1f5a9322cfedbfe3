// Regenerates the types from the committed spec into a temporary file and fails if they differ
// from the committed src/generated/schema.ts (the generated file is never edited by hand).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const spec = join(root, "..", "..", "openapi", "openapi.json");
const committed = join(root, "src", "generated", "schema.ts");
const dir = mkdtempSync(join(tmpdir(), "buildlogs-schema-"));
const fresh = join(dir, "schema.ts");
try {
  const cli = join(root, "node_modules", "openapi-typescript", "bin", "cli.js");
  execFileSync(process.execPath, [cli, spec, "-o", fresh], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  const expected = readFileSync(fresh, "utf8");
  let actual = "";
  try {
    actual = readFileSync(committed, "utf8");
  } catch {
    // missing: reported below
  }
  if (actual !== expected) {
    console.error(
      "src/generated/schema.ts is out of date with openapi/openapi.json (or was edited by hand).\n" +
        "Fix: cd clients/typescript && npm run generate, then commit src/generated/schema.ts",
    );
    process.exit(1);
  }
  console.log("src/generated/schema.ts matches openapi/openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
