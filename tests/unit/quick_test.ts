import assert from "node:assert/strict";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import process from "node:process";
import { onPath, runHooks } from "../../cmd/quick.ts";

/** Runs `fn` with PATH set to `path`, then puts PATH back. */
function withPath<T>(path: string, fn: () => T): T {
  const saved = process.env.PATH;
  process.env.PATH = path;
  try {
    return fn();
  } finally {
    process.env.PATH = saved;
  }
}

Deno.test("onPath finds an executable as `command -v` does, without a shell", () => {
  const dir = Deno.makeTempDirSync();
  try {
    for (const d of ["a", "b", "c"]) mkdirSync(`${dir}/${d}`);
    // a: a directory of that name; b: a file that is not executable; c: the executable.
    mkdirSync(`${dir}/a/tool`);
    writeFileSync(`${dir}/b/tool`, "");
    chmodSync(`${dir}/b/tool`, 0o644);
    writeFileSync(`${dir}/c/tool`, "");
    chmodSync(`${dir}/c/tool`, 0o755);
    assert.equal(onPath("tool", `${dir}/a:${dir}/b:${dir}/c`), `${dir}/c/tool`);
    assert.equal(onPath("tool", `${dir}/a:${dir}/b`), null);
    assert.equal(onPath("other", `${dir}/c:/nonexistent`), null);
    // PATH from the environment by default.
    assert.equal(withPath(`${dir}/c`, () => onPath("tool")), `${dir}/c/tool`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("hooks: none need no shell; some without a shell fail in one line, before running any", () => {
  const dir = Deno.makeTempDirSync();
  try {
    // A PATH with no shell in it, as in the distroless image.
    withPath(dir, () => runHooks([], "wg0", "PreUp"));
    const marker = `${dir}/ran`;
    assert.throws(
      () => withPath(dir, () => runHooks([`touch ${marker}`], "wg0", "PostUp")),
      (e: Error) => /^PostUp hooks need a shell, and neither bash nor sh is in PATH$/.test(e.message),
    );
    assert.throws(() => Deno.statSync(marker));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
