/**
 * The decisions of wg-quick(8) that `typetun up` and `typetun down` take the same way, as pure functions: the
 * automatic MTU, the order routes go in, the firewall scripts and how they are found again, resolvconf's record
 * name, and which policy rules the take-down deletes. The reference is the current wg-quick
 * (wireguard-tools v1.0.20260223, src/wg-quick/linux.bash); the function each part mirrors is named.
 * cmd/up.ts and cmd/quick.ts gather the inputs (netlink, the UAPI, files) and run the result.
 * @module
 */

/** What wg-quick leaves for the tunnel's headers: IPv6 (40) + UDP (8) + WireGuard data (32). */
export const MTU_OVERHEAD = 80;
/** The MTU assumed when no route says anything. */
export const FALLBACK_MTU = 1500;

/**
 * set_mtu_up: the smallest MTU on the way to any endpoint (each the route's own `mtu`, else its device's),
 * else the default route's, else 1500; less {@link MTU_OVERHEAD}. Until 1.0.20210914 it was the largest,
 * which made a tunnel whose endpoints sit behind different links fragment on the narrower one.
 * @param paths the MTU towards each endpoint the device holds; 0 where `ip route get` gave none
 * @param defaultRoute the MTU of the first default route of the main table, 0 or undefined if none
 */
export function chooseMtu(paths: readonly number[], defaultRoute?: number): number {
  let mtu = Infinity;
  for (const m of paths) if (m > 0 && m < mtu) mtu = m;
  if (mtu === Infinity && defaultRoute !== undefined && defaultRoute > 0) mtu = defaultRoute;
  if (mtu === Infinity) mtu = FALLBACK_MTU;
  return mtu - MTU_OVERHEAD;
}

/**
 * cmd_up's route loop: the allowed IPs as `wg show IF allowed-ips` prints them, most specific first
 * (`sort -nr -k 2 -t /`, under LC_ALL=C: equal prefix lengths fall back to comparing the whole text, reversed).
 * The order decides which /0 (IPv4 or IPv6) picks the fwmark table, and the priorities the kernel gives rules.
 */
export function routeOrder(cidrs: readonly string[]): string[] {
  const len = (c: string) => Number(c.slice(c.indexOf("/") + 1));
  return [...cidrs].sort((a, b) => len(b) - len(a) || (a < b ? 1 : a > b ? -1 : 0));
}

/** The nftables table wg-quick keeps an interface's rules of one family in (`ip wg-quick-wg0`). */
export function nftTableName(ifname: string): string {
  return `wg-quick-${ifname}`;
}

/** The comment that marks wg-quick's iptables rules for an interface. */
export function iptablesComment(ifname: string): string {
  return `wg-quick(8) rule for ${ifname}`;
}

/**
 * add_default's nft script for one family, character for character: a raw-priority prerouting chain drops
 * packets for the interface's addresses that arrive from elsewhere (unless from a local address: anti-spoofing,
 * CVE-2019-14899), and mangle-priority chains save the fwmark of the tunnel's own UDP in the connection's mark
 * and restore it on replies, so they match the `not fwmark` rule and stay out of the tunnel.
 * @param addresses the interface's addresses of this family as the kernel lists them (`ip -o addr show dev`),
 *   so a link-local one or one added by a hook counts too
 */
export function nftScript(family: 4 | 6, ifname: string, addresses: readonly string[], mark: number): string {
  const pf = family === 4 ? "ip" : "ip6", t = nftTableName(ifname);
  let s = `add table ${pf} ${t}\n` +
    `add chain ${pf} ${t} preraw { type filter hook prerouting priority -300; }\n` +
    `add chain ${pf} ${t} premangle { type filter hook prerouting priority -150; }\n` +
    `add chain ${pf} ${t} postmangle { type filter hook postrouting priority -150; }\n`;
  for (const a of addresses) {
    s += `add rule ${pf} ${t} preraw iifname != "${ifname}" ${pf} daddr ${a} fib saddr type != local drop\n`;
  }
  return s + `add rule ${pf} ${t} postmangle meta l4proto udp mark ${mark} ct mark set mark \n` +
    `add rule ${pf} ${t} premangle meta l4proto udp meta mark set ct mark \n`;
}

/** add_default's iptables-restore script for one family (without nft): the same rules as {@link nftScript}. */
export function iptablesScript(ifname: string, addresses: readonly string[], mark: number): string {
  const marker = `-m comment --comment "${iptablesComment(ifname)}"`;
  let s = "*raw\n";
  for (const a of addresses) {
    s += `-I PREROUTING ! -i ${ifname} -d ${a} -m addrtype ! --src-type LOCAL -j DROP ${marker}\n`;
  }
  return s + "COMMIT\n*mangle\n" +
    `-I POSTROUTING -m mark --mark ${mark} -p udp -j CONNMARK --save-mark ${marker}\n` +
    `-I PREROUTING -p udp -j CONNMARK --restore-mark ${marker}\nCOMMIT\n`;
}

/**
 * remove_firewall, nftables half: from `nft list tables`, the script deleting every table named for the
 * interface, in any family; null when there is none.
 */
export function nftRemoval(listTables: string, ifname: string): string | null {
  let s = "";
  for (const line of listTables.split("\n")) {
    if (line.endsWith(` ${nftTableName(ifname)}`)) s += `delete ${line}\n`;
  }
  return s || null;
}

/**
 * remove_firewall, iptables half: from `iptables-save` (or ip6tables-save), the iptables-restore -n script
 * deleting every rule carrying the interface's comment; null when there is none.
 */
export function iptablesRemoval(save: string, ifname: string): string | null {
  const marker = `-m comment --comment "${iptablesComment(ifname)}"`;
  let s = "", found = false;
  for (const line of save.split("\n")) {
    const ours = line.startsWith("-A ") && line.includes(marker);
    if (!line.startsWith("*") && line !== "COMMIT" && !ours) continue;
    if (ours) found = true;
    s += `${ours ? `-D${line.slice(2)}` : line}\n`;
  }
  return found ? s : null;
}

/**
 * resolvconf_iface_prefix: Debian's resolvconf orders records by name patterns in
 * /etc/resolvconf/interface-order; wg-quick names its record after the first pattern of the form `NAME*`
 * (`tun*` there, so `tun.wg0`) to sort with VPNs. Not when `resolvconf` is a symbolic link (systemd's
 * resolvectl, which has no such order), nor without that file.
 * @param interfaceOrder the file's text, or null when it does not exist
 */
export function resolvconfPrefix(interfaceOrder: string | null, resolvconfIsLink: boolean): string {
  if (interfaceOrder === null || resolvconfIsLink) return "";
  for (const line of interfaceOrder.split("\n")) {
    const m = /^([A-Za-z0-9-]+)\*$/.exec(line.trim());
    if (m) return `${m[1]}.`;
  }
  return "";
}

/** A policy rule as far as the take-down looks at it (ffi/netlink.ts listRules gives these). */
export interface ListedRule {
  table: number;
  notFwmark?: number;
  suppressPrefixLength?: number;
  /** The rule has selectors beyond these (from, iif, a plain fwmark…). */
  other: boolean;
}

/**
 * del_if: whether the take-down deletes default-route rules, and for which table: only with Table unset or
 * `auto`, a fwmark on the device, and a /0 among its allowed IPs (all read at take-down time, as wg-quick
 * reads `wg show`); null otherwise.
 */
export function defaultRouteTable(
  table: string | undefined,
  fwmark: number,
  prefixLengths: readonly number[],
): number | null {
  if (table !== undefined && table !== "auto") return null;
  if (!fwmark || !prefixLengths.includes(0)) return null;
  return fwmark;
}

/**
 * del_if's rule loops, for one family: every rule that looks up the fwmark table, and every
 * `from all lookup main suppress_prefixlength 0` — whoever added them, as wg-quick deletes them.
 */
export function rulesToDelete<R extends ListedRule>(rules: readonly R[], table: number): R[] {
  return rules.filter((r) =>
    r.table === table ||
    (r.table === 254 && r.suppressPrefixLength === 0 && r.notFwmark === undefined && !r.other)
  );
}
