// Builds the web client into dist/: app.js, app.css and index.html, which the
// Rust binary embeds. The output depends only on the sources and the locked
// esbuild version, so `node build.mjs --check` can tell whether the committed
// dist/ is stale.
import { createHash } from "node:crypto";
import { readFile, readdir, mkdir, writeFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const check = process.argv.includes("--check");

const common = {
  bundle: true,
  minify: true,
  write: false,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
  absWorkingDir: here,
};

async function build() {
  const js = await esbuild.build({
    ...common,
    entryPoints: ["app/main.ts"],
    format: "esm",
    target: ["es2020", "chrome100", "firefox100", "safari15"],
    outfile: "dist/app.js",
  });
  const css = await esbuild.build({
    ...common,
    entryPoints: ["app/styles.css"],
    target: ["chrome100", "firefox100", "safari15"],
    outfile: "dist/app.css",
  });
  const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 12);
  const jsBytes = js.outputFiles[0].contents;
  const cssBytes = css.outputFiles[0].contents;
  const html = (await readFile(join(here, "app/index.html"), "utf8"))
    .replace("__JS_HASH__", hash(jsBytes))
    .replace("__CSS_HASH__", hash(cssBytes));
  return new Map([
    ["app.js", Buffer.from(jsBytes)],
    ["app.css", Buffer.from(cssBytes)],
    ["index.html", Buffer.from(html)],
  ]);
}

const files = await build();

if (check) {
  const problems = [];
  let present = [];
  try {
    present = await readdir(dist);
  } catch {
    problems.push("dist/ is missing");
  }
  for (const name of present) if (!files.has(name)) problems.push(`dist/${name} is not produced by the build`);
  for (const [name, bytes] of files) {
    let old;
    try {
      old = await readFile(join(dist, name));
    } catch {
      problems.push(`dist/${name} is missing`);
      continue;
    }
    if (!old.equals(bytes)) problems.push(`dist/${name} differs from a fresh build`);
  }
  if (problems.length) {
    console.error(`web/dist is stale:\n  ${problems.join("\n  ")}\nRun \`npm run build\` in web/ and commit web/dist.`);
    process.exit(1);
  }
  console.log("web/dist is up to date.");
} else {
  await rm(dist, { recursive: true, force: true });
  await mkdir(dist, { recursive: true });
  for (const [name, bytes] of files) await writeFile(join(dist, name), bytes);
  for (const [name, bytes] of files) console.log(`dist/${name}  ${(bytes.length / 1024).toFixed(1)} KiB`);
}
