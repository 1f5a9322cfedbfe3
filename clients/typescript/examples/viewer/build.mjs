// Bundles the viewer (examples/viewer/main.ts plus @buildlogs/client from src/) into
// examples/viewer/dist/viewer.js. Then serve examples/viewer/ with any static file server, e.g.
//   npm run viewer   (from clients/typescript: builds, then serves on 127.0.0.1:5173)
// and open http://127.0.0.1:5173/?baseUrl=http://127.0.0.1:8080&jobId=demo-1#token=<TOKEN>
// with the server started with CORS_ALLOWED_ORIGINS=http://127.0.0.1:5173.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");

await build({
  entryPoints: [join(here, "main.ts")],
  outfile: join(here, "dist", "viewer.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  alias: { "@buildlogs/client": join(root, "src", "index.ts") },
  logLevel: "warning",
});
console.log("built examples/viewer/dist/viewer.js");
