import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";

const bun = new URL("../../node_modules/.bin/bun", import.meta.url).pathname;
const script = new URL("./bun_smoke.ts", import.meta.url).pathname;

Deno.test({ name: "the runtime adapter works under Bun (bun_smoke.ts)", ignore: !existsSync(bun) }, () => {
  const r = spawnSync(bun, ["run", script], { encoding: "utf8", timeout: 60000 });
  assert.equal(r.status, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.match(r.stdout, /runtime bun, nonblocking calls: false/);
  assert.match(r.stdout, /bun smoke ok/);
});

Deno.test("the Bun smoke script also passes under Deno", () => {
  const r = spawnSync(Deno.execPath(), ["run", "-A", script], { encoding: "utf8", timeout: 60000 });
  assert.equal(r.status, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.match(r.stdout, /runtime deno, nonblocking calls: true/);
  assert.match(r.stdout, /bun smoke ok/);
});
