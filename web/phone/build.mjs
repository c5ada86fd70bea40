// Bundles the softphone page into the Python package's static folder
// (src/click2dial/static/phone), which the server serves at /phone.  Run by
// `npm run build` (the Makefile's `phone` target); the output is not committed.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "src", "click2dial", "static", "phone");

await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "phone.js")],
  outfile: join(out, "phone.js"),
  bundle: true,
  minify: true,
  format: "esm",
  target: "chrome120",
  // SIP.js's licence stays with the code that carries it.
  legalComments: "eof",
  logLevel: "warning",
});
for (const name of ["index.html", "phone.css"]) {
  await copyFile(join(here, "src", name), join(out, name));
}
