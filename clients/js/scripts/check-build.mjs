// Fails if the committed dist/ is not exactly what the TypeScript sources
// compile to: the build is committed (so `cargo build` and `make run` need
// no node) and embedded in presenced, and must not drift from src/.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const fresh = mkdtempSync(join(tmpdir(), "presence-js-build-"));
try {
  const tsc = join(root, "node_modules/typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json"), "--outDir", fresh], { stdio: "inherit" });
  const list = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? list(path) : [path];
    });
  const committed = new Set(list(join(root, "dist")).map((p) => relative(join(root, "dist"), p)));
  const built = new Set(list(fresh).map((p) => relative(fresh, p)));
  const problems = [];
  for (const file of built) {
    if (!committed.has(file)) problems.push(`missing from dist/: ${file}`);
    else if (!readFileSync(join(fresh, file)).equals(readFileSync(join(root, "dist", file)))) {
      problems.push(`differs from the sources: dist/${file}`);
    }
  }
  for (const file of committed) if (!built.has(file)) problems.push(`not built from any source: dist/${file}`);
  if (problems.length) {
    console.error(problems.join("\n"));
    console.error("the committed build is stale: run `make js` and commit clients/js/dist");
    process.exit(1);
  }
  console.log(`dist/ matches the sources (${built.size} files)`);
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
