// Run by tun_test.ts without CAP_NET_ADMIN: prints openTun's error message and exits 1.
import process from "node:process";
import { openTun } from "../../ffi/tun.ts";

try {
  openTun(process.argv[2] ?? Deno.args[0]!).close();
  console.log("opened");
} catch (e) {
  console.log((e as Error).message);
  process.exit(1);
}
