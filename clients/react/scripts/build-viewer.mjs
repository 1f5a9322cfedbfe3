// Builds the example viewer (example/) into ../../assets/viewer/, which the server embeds and
// serves at /viewer/ in dev mode. `--check` builds in memory and fails when the committed files
// differ (CI's freshness check, as check:generated is for the client's types).
import { readFileSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "..", "..", "assets", "viewer");
const check = process.argv.includes("--check");

const result = await build({
  entryPoints: [join(root, "example", "main.tsx")],
  outfile: join(out, "viewer.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  alias: {
    "@buildlogs/react": join(root, "src", "index.ts"),
    "@buildlogs/client": join(root, "..", "typescript", "src", "index.ts"),
  },
  legalComments: "eof",
  write: false,
  logLevel: "warning",
});

const files = [
  ...result.outputFiles.map((f) => ({ path: f.path, bytes: Buffer.from(f.contents) })),
  { path: join(out, "index.html"), bytes: readFileSync(join(root, "example", "index.html")) },
];

if (check) {
  const stale = [];
  for (const file of files) {
    const committed = await readFile(file.path).catch(() => undefined);
    if (!committed || !committed.equals(file.bytes)) stale.push(relative(process.cwd(), file.path));
  }
  if (stale.length > 0) {
    console.error(`stale viewer assets: ${stale.join(", ")}\nrun \`npm run build:viewer\` in clients/react and commit the result`);
    process.exit(1);
  }
  console.log("assets/viewer is up to date with its sources");
} else {
  await mkdir(out, { recursive: true });
  for (const file of files) await writeFile(file.path, file.bytes);
  console.log(`built ${files.map((f) => relative(process.cwd(), f.path)).join(", ")}`);
}
