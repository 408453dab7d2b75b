/**
 * typetun: a userspace WireGuard. The entry point hands argv to cmd/.
 * @module
 */
import process from "node:process";
import { main } from "./cmd/main.ts";

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
