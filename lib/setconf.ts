/**
 * Configurations to and from the UAPI: the set request a file makes (`wg setconf`, `addconf`, `syncconf`, as
 * wireguard-tools' config.c and setconf.c build it), and the configuration a running device reports
 * (`wg showconf`).
 * @module
 */

import {
  emptyConfig,
  type EndpointSpec,
  formatAddressLikeWg,
  formatEndpointSpec,
  literalEndpoint,
  type PeerConfig,
  type WgConfig,
} from "./config.ts";
import { keyToHex } from "./encoding.ts";
import { isIncremental } from "./allowedips.ts";
import type { Endpoint } from "./ip.ts";
import type { DeviceInfo, DeviceUpdate, PeerUpdate } from "./uapi.ts";

/**
 * The configuration of a running interface (a UAPI get), as `wg showconf` reads it: zero values (port,
 * fwmark, keepalive) and absent keys are left out.
 */
export function configFromDevice(info: DeviceInfo): WgConfig {
  const cfg = emptyConfig();
  if (info.privateKey) cfg.privateKey = info.privateKey;
  if (info.listenPort) cfg.listenPort = info.listenPort;
  if (info.fwmark) cfg.fwmark = info.fwmark;
  for (const p of info.peers) {
    const peer: PeerConfig = { publicKey: p.publicKey, allowedIps: p.allowedIps };
    if (p.presharedKey) peer.presharedKey = p.presharedKey;
    if (p.endpoint) peer.endpoint = { host: formatAddressLikeWg(p.endpoint.addr), port: p.endpoint.port };
    if (p.persistentKeepalive) peer.persistentKeepalive = p.persistentKeepalive;
    cfg.peers.push(peer);
  }
  return cfg;
}

/**
 * The set request a file makes, as wg(8) builds it (config.c, config_read_init and process_line):
 * - `set` (`setconf`, and `wg-quick up`): the file is the whole configuration: replace_peers, and the private
 *   key, listen port and fwmark are always sent, as zero/0/0 when the file has none;
 * - `add` (`addconf`): only what the file says; peers are added or updated.
 * Every peer replaces its allowed IPs, unless its AllowedIPs carry a `+` or `-` entry: then they are added and
 * removed one by one (`allowed_ip=-PREFIX`), as current wg(8) does, unless a plain AllowedIPs line came after
 * the last signed one (PeerConfig.replaceAllowedIps): then, as wg(8), the list replaces, signed entries and all. wg-quick keys are ignored (the caller
 * applies them).
 *
 * @param resolve the endpoint for a spec; the default takes IP literals and throws on host names, so cmd/
 *   resolves names first and passes a lookup.
 */
export function configToUpdate(
  cfg: WgConfig,
  mode: "set" | "add",
  resolve: (e: EndpointSpec) => Endpoint = literalOnly,
): DeviceUpdate {
  const unread = cfg.privateKeyFile && !cfg.privateKey
    ? cfg.privateKeyFile
    : cfg.peers.find((p) => p.presharedKeyFile && !p.presharedKey)?.presharedKeyFile;
  // A key file is read by cmd/ (resolveKeyFiles); sending a zero key in its place would silently unset it.
  if (unread) throw new Error(`the key file ${unread.path} was not read`);
  const u: DeviceUpdate = { replacePeers: mode === "set", peers: [] };
  if (mode === "set") {
    u.privateKey = cfg.privateKey ?? new Uint8Array(32);
    u.listenPort = cfg.listenPort ?? 0;
    u.fwmark = cfg.fwmark ?? 0;
  } else {
    if (cfg.privateKey) u.privateKey = cfg.privateKey;
    if (cfg.listenPort !== undefined) u.listenPort = cfg.listenPort;
    if (cfg.fwmark !== undefined) u.fwmark = cfg.fwmark;
  }
  for (const p of cfg.peers) {
    const peer: PeerUpdate = {
      publicKey: p.publicKey,
      remove: false,
      updateOnly: false,
      replaceAllowedIps: p.replaceAllowedIps === true || !isIncremental(p.allowedIps),
      allowedIps: [...p.allowedIps],
    };
    if (p.presharedKey) peer.presharedKey = p.presharedKey;
    if (p.endpoint) peer.endpoint = resolve(p.endpoint);
    // A name goes along (typetun's endpoint_name=), so the daemon can resolve it again (cmd/reresolve.ts).
    if (p.endpoint && !literalEndpoint(p.endpoint)) peer.endpointName = formatEndpointSpec(p.endpoint);
    if (p.persistentKeepalive !== undefined) peer.persistentKeepalive = p.persistentKeepalive;
    // typetun's filter keys (allow_inbound=, allow_outbound=): only a file that has them sends them.
    if (p.allowInbound !== undefined) peer.allowInbound = p.allowInbound;
    if (p.allowOutbound !== undefined) peer.allowOutbound = p.allowOutbound;
    u.peers.push(peer);
  }
  return u;
}

function literalOnly(e: EndpointSpec): Endpoint {
  const ep = literalEndpoint(e);
  if (!ep) throw new Error(`endpoint ${formatEndpointSpec(e)} needs name resolution`);
  return ep;
}

/**
 * Turns a `set` update into what `wg syncconf` sends (wireguard-tools setconf.c, sync_conf): instead of
 * replacing every peer (which would drop their sessions), running peers missing from the file are removed,
 * and a running peer's preshared key or persistent keepalive that the file no longer mentions is turned off.
 * Unchanged peers keep their sessions. A file without peers keeps replace_peers and so removes them all.
 */
export function syncUpdate(
  update: DeviceUpdate,
  running: DeviceInfo,
  filtered: ReadonlySet<string> = new Set(),
): DeviceUpdate {
  if (update.peers.length === 0 || running.peers.length === 0) return update;
  // A get does not report typetun's filters. A peer known to have one (`filtered`, hex keys), or any peer when
  // the file filters some (so the interface is typetun's), is sent `any` for a direction the file leaves out.
  const clearFilters = update.peers.some((p) =>
    p.allowInbound !== undefined || p.allowOutbound !== undefined
  );
  const removals: PeerUpdate[] = [];
  const peers = update.peers.map((p) => ({ ...p }));
  const byKey = new Map(peers.map((p) => [keyToHex(p.publicKey), p]));
  for (const r of running.peers) {
    const filePeer = byKey.get(keyToHex(r.publicKey));
    if (!filePeer) {
      removals.push({
        publicKey: r.publicKey,
        remove: true,
        updateOnly: false,
        replaceAllowedIps: false,
        allowedIps: [],
      });
      continue;
    }
    if (r.presharedKey && !filePeer.presharedKey) filePeer.presharedKey = new Uint8Array(32);
    if (r.persistentKeepalive && filePeer.persistentKeepalive === undefined) filePeer.persistentKeepalive = 0;
    if (clearFilters || filtered.has(keyToHex(r.publicKey))) {
      filePeer.allowInbound ??= null;
      filePeer.allowOutbound ??= null;
    }
  }
  return { ...update, replacePeers: false, peers: [...removals, ...peers] };
}
