/**
 * typetun: a userspace WireGuard. The entry point hands argv to cmd/.
 *
 * It has no top-level `await` and no `import.meta`: the Bun executable is built with `--bytecode`
 * (scripts/compile.ts), whose CommonJS bytecode allows neither. Nothing imports this file; it is only run.
 * @module
 */
import process from "node:process";
import { main } from "./cmd/main.ts";

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
