/**
 * `typetun health IFNAME [--max-handshake-age SECONDS]`: a container's HEALTHCHECK. Exit 0 when the daemon
 * answers a UAPI get and every peer with an endpoint completed a handshake within the age (default 180 s,
 * REJECT_AFTER_TIME); otherwise exit 1 with one line saying why. It only reads (`get=1`), so it works against
 * wireguard-go and boringtun as well.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { DEFAULT_MAX_HANDSHAKE_AGE, handshakeHealth } from "../lib/health.ts";
import { parseGet } from "../lib/uapi.ts";
import { parseMaxAge } from "./metrics.ts";
import { InterfaceError, uapiRequest } from "./uapi_client.ts";

export const HEALTH_USAGE = `Usage: typetun health INTERFACE [--max-handshake-age SECONDS]

  Exits 0 when the daemon of INTERFACE answers and every peer that has an endpoint completed a handshake
  within SECONDS (default ${DEFAULT_MAX_HANDSHAKE_AGE / 1000}); otherwise exits 1 with one line saying why.
`;

/** A health check must answer before the runtime's own timeout (Docker's default is 30 s). */
const UAPI_TIMEOUT_MS = 5000;

export async function healthMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { "max-handshake-age": { type: "string" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
    });
  } catch (e) {
    process.stderr.write(`typetun health: ${(e as Error).message}\n${HEALTH_USAGE}`);
    return 1;
  }
  if (parsed.values.help) {
    process.stdout.write(HEALTH_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(HEALTH_USAGE);
    return 1;
  }
  const ifname = parsed.positionals[0]!;
  const ageArg = parsed.values["max-handshake-age"];
  const maxAgeMs = ageArg === undefined ? DEFAULT_MAX_HANDSHAKE_AGE : parseMaxAge(ageArg);
  if (maxAgeMs === null) {
    process.stderr.write(
      `typetun health: --max-handshake-age "${ageArg}": not a positive number of seconds\n`,
    );
    return 1;
  }
  let reply;
  try {
    const r = parseGet(await uapiRequest(ifname, "get=1\n\n", UAPI_TIMEOUT_MS));
    if (!r.ok) throw new InterfaceError(ifname, r.errno);
    reply = r.value;
  } catch (e) {
    process.stderr.write(`unhealthy: ${ifname}: the daemon does not answer: ${(e as Error).message}\n`);
    return 1;
  }
  const v = handshakeHealth(reply.peers, Date.now(), maxAgeMs);
  if (v.healthy) {
    process.stdout.write(`healthy: ${ifname}: ${v.reason}\n`);
    return 0;
  }
  process.stderr.write(`unhealthy: ${ifname}: ${v.reason}\n`);
  return 1;
}
