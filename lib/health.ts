/**
 * The health verdict of a tunnel endpoint, for `typetun health`, `/healthz` and a container's HEALTHCHECK:
 * healthy when every peer that has an endpoint (so one we can reach, and whose session we keep up) completed
 * a handshake within the allowed age. The default age is REJECT_AFTER_TIME: past it, no session from that
 * handshake may carry data any more (paper 6.2), so the tunnel to that peer is down. A peer without an
 * endpoint waits to be contacted (a server's road warrior) and says nothing about our health.
 *
 * Pure: the caller passes the peers (from a UAPI get) and the wall-clock time.
 * @module
 */
import { keyToBase64 } from "./encoding.ts";
import { REJECT_AFTER_TIME } from "./messages.ts";
import type { PeerInfo } from "./uapi.ts";

/** The default `--max-handshake-age`, in ms. */
export const DEFAULT_MAX_HANDSHAKE_AGE = REJECT_AFTER_TIME;

/** Healthy or not, and one line that says why. */
export interface HealthVerdict {
  healthy: boolean;
  reason: string;
}

type HealthPeer = Pick<PeerInfo, "publicKey" | "endpoint" | "lastHandshakeMs">;

/**
 * The verdict for `peers` at wall-clock time `nowMs` (ms since the epoch). When several peers are stale the
 * line names the one stale the longest (never handshaken first) and counts the others.
 */
export function handshakeHealth(
  peers: readonly HealthPeer[],
  nowMs: number,
  maxAgeMs = DEFAULT_MAX_HANDSHAKE_AGE,
): HealthVerdict {
  const limit = formatSeconds(maxAgeMs);
  const watched = peers.filter((p) => p.endpoint !== null);
  // A handshake "from the future" (the wall clock was set back) is as fresh as one now.
  const age = (p: HealthPeer) => Math.max(0, nowMs - p.lastHandshakeMs);
  const stale = watched.filter((p) => p.lastHandshakeMs === 0 || age(p) > maxAgeMs)
    .sort((a, b) => a.lastHandshakeMs - b.lastHandshakeMs);
  if (stale.length === 0) {
    const n = watched.length;
    return {
      healthy: true,
      reason: n === 0
        ? "no peer has an endpoint: nothing to watch"
        : `${n === 1 ? "the peer" : `all ${n} peers`} with an endpoint completed a handshake within ${limit}`,
    };
  }
  const p = stale[0]!;
  const who = `peer ${keyToBase64(p.publicKey)} (${p.endpoint})`;
  const since = p.lastHandshakeMs === 0
    ? "no handshake yet"
    : `latest handshake ${formatDuration(age(p))} ago (${
      new Date(p.lastHandshakeMs).toISOString().replace(/\.\d+Z$/, "Z")
    }), ` +
      `more than ${limit}`;
  const more = stale.length > 1
    ? ` (and ${stale.length - 1} more stale peer${stale.length > 2 ? "s" : ""})`
    : "";
  return { healthy: false, reason: `${who}: ${since}${more}` };
}

/** `180 s`, `0.5 s`. */
function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

/** As `wg show` words an age: `1 hour, 2 minutes, 5 seconds`; under a second, `0 seconds`. */
export function formatDuration(ms: number): string {
  let s = Math.floor(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]] as const) {
    const n = Math.floor(s / size);
    s -= n * size;
    if (n) parts.push(`${n} ${unit}${n === 1 ? "" : "s"}`);
  }
  return parts.length ? parts.join(", ") : "0 seconds";
}
