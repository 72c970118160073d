// Builds dist/: the app bundled and minified by esbuild under content-hashed
// names (so the server can cache them for a year), and index.html naming
// them. The output is deterministic: CI rebuilds it and fails on drift.

import { build } from "esbuild";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename } from "node:path";

const dist = new URL("./dist/", import.meta.url).pathname;
rmSync(dist, { recursive: true, force: true });
mkdirSync(`${dist}assets`, { recursive: true });

const result = await build({
  entryPoints: { app: "src/main.ts", style: "src/style.css" },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  outdir: `${dist}assets`,
  entryNames: "[name]-[hash]",
  legalComments: "none",
  charset: "utf8",
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((path) => basename(path));
const script = outputs.find((name) => name.startsWith("app-") && name.endsWith(".js"));
const style = outputs.find((name) => name.startsWith("style-") && name.endsWith(".css"));
if (!script || !style) throw new Error(`esbuild produced ${outputs.join(", ")}`);
// esbuild emits an empty style.js next to the CSS entry point; nothing loads it.
for (const name of readdirSync(`${dist}assets`)) {
  if (name.startsWith("style-") && name.endsWith(".js")) rmSync(`${dist}assets/${name}`);
}

writeFileSync(
  `${dist}index.html`,
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Wharf</title>
<link rel="stylesheet" href="/ui/assets/${style}">
<script type="module" src="/ui/assets/${script}"></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header id="top"></header>
<main id="main" tabindex="-1"></main>
<noscript>The Wharf dashboard needs JavaScript; the wharf CLI does the same without it.</noscript>
</body>
</html>
`,
);
