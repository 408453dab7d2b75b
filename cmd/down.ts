/**
 * `typetun down CONFIG|IFNAME`: what the current wg-quick(8) down does, through cmd/quick.ts's take-down:
 * PreDown hooks; SaveConfig writes the running configuration back to the file; the default-route rules go,
 * the interface is deleted (its addresses and routes go with it, and the daemon exits), then DNS and wg-quick's
 * firewall rules for it; PostDown hooks. It takes down what wg-quick brought up too, and the other way round.
 * @module
 */
import { existsSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { ifNameToIndex } from "../ffi/libc.ts";
import type { WgConfig } from "../lib/config.ts";
import { assumedState, loadState, locateConfig, readConfig, takeDown } from "./quick.ts";
import { socketPath } from "./uapi_client.ts";

export const DOWN_USAGE = `Usage: typetun down CONFIG_FILE | INTERFACE

  Takes down what \`typetun up\` (or wg-quick up) brought up from the same file: saves the configuration
  back if SaveConfig = true, runs PreDown and PostDown hooks, removes rules, firewall rules and DNS, and
  deletes the interface.
`;

export async function downMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { help: { type: "boolean", short: "h" } }, allowPositionals: true });
  } catch (e) {
    process.stderr.write(`typetun down: ${(e as Error).message}\n${DOWN_USAGE}`);
    return 1;
  }
  if (parsed.values.help) {
    process.stdout.write(DOWN_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(DOWN_USAGE);
    return 1;
  }
  let ifname: string, path: string, cfg: WgConfig;
  try {
    ({ ifname, path } = locateConfig(parsed.positionals[0]!));
    cfg = readConfig(path);
    if (!ifNameToIndex(ifname) || !existsSync(socketPath(ifname))) {
      throw new Error(`\`${ifname}' is not a WireGuard interface`);
    }
  } catch (e) {
    process.stderr.write(`typetun: ${(e as Error).message}\n`);
    return 1;
  }
  const state = loadState(ifname) ?? assumedState(ifname, path, cfg);
  return await takeDown(cfg, path, state, true);
}
