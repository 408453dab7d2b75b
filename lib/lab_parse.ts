/**
 * Reads a lab file (TOML, issue 15) into the model of lib/lab.ts and checks it whole: every problem is
 * collected and thrown at the end in one {@link LabError}, each as "file:line: message", so a user fixes the
 * file in one round instead of one error per run. Pure: no I/O.
 * @module
 */
import { parse as parseTomlText, TomlError } from "smol-toml";
import { type InterfaceAddress, parseInterfaceAddress } from "./config.ts";
import { type Cidr, formatAddress, formatCidr, maskAddress, parseCidr } from "./ip.ts";
import {
  IFNAME_MAX,
  type Implementation,
  type Lab,
  type LabCheck,
  LabError,
  type LabLink,
  type LabNode,
  type LabPeer,
  type LabWireguard,
  type LinkEnd,
} from "./lab.ts";

/** Namespace names `<lab>-<node>`: kept short and plain so that they are safe in paths and shell lines. */
export const NETNS_NAME_MAX = 64;
const NAME_RE = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
/** What Linux accepts in an interface name (dev_valid_name) minus what would confuse `ip` or our `node:if`. */
const IFNAME_RE = /^[A-Za-z0-9_.-]+$/;

/** Every key of a lab file, by the table it belongs in (README's reference table lists them all). */
export const LAB_KEYS = {
  top: ["name", "node", "link", "wireguard", "check"],
  node: ["routes", "forward", "nat", "sysctls", "exec"],
  link: ["ends", "addresses", "mtu", "netem"],
  netem: ["delay_ms", "loss_percent"],
  wireguard: ["node", "name", "addresses", "listen_port", "implementation", "mtu", "peer"],
  peer: ["to", "endpoint", "allowed_ips", "persistent_keepalive", "preshared_key"],
  check: ["from", "ping", "expect"],
} as const;
const TOP_KEYS: readonly string[] = LAB_KEYS.top;
const NODE_KEYS: readonly string[] = LAB_KEYS.node;
const LINK_KEYS: readonly string[] = LAB_KEYS.link;
const NETEM_KEYS: readonly string[] = LAB_KEYS.netem;
const WG_KEYS: readonly string[] = LAB_KEYS.wireguard;
const PEER_KEYS: readonly string[] = LAB_KEYS.peer;
const CHECK_KEYS: readonly string[] = LAB_KEYS.check;

type Table = Record<string, unknown>;

/** Parses and checks a lab file. Throws LabError listing every problem (TOML syntax errors included). */
export function parseLab(text: string, file: string): Lab {
  let doc: Table;
  try {
    doc = parseTomlText(text) as Table;
  } catch (e) {
    if (e instanceof TomlError) {
      const what = e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      throw new LabError([`${file}:${e.line}: TOML: ${what}`]);
    }
    throw e;
  }
  return new LabReader(file, new LabLines(text)).read(doc);
}

/** One interface of a node, as links and [[wireguard]]s declare them (they share the node's namespace). */
interface Iface {
  kind: "link" | "wireguard";
  addresses: InterfaceAddress[];
  line: number;
}

class LabReader {
  readonly #problems: { line: number; message: string }[] = [];
  /** node → interface name → what declared it. */
  readonly #ifaces = new Map<string, Map<string, Iface>>();

  constructor(readonly file: string, readonly lines: LabLines) {}

  fail(line: number, message: string): void {
    this.#problems.push({ line, message });
  }

  read(doc: Table): Lab {
    this.#keys(doc, TOP_KEYS, "", "the top level");
    const name = this.#name(doc);
    const nodes = this.#nodes(doc.node, name);
    const links = this.#array(doc.link, "link", "[[link]]").map((t, i) => this.#link(t, `link.${i}`));
    const wgTables = this.#array(doc.wireguard, "wireguard", "[[wireguard]]");
    const wireguards = wgTables.map((t, i) => this.#wireguard(t, `wireguard.${i}`));
    // Peers need every [[wireguard]] known first: `to` may name one further down the file.
    wireguards.forEach((wg, i) => {
      this.#array(wgTables[i]!.peer, `wireguard.${i}.peer`, "[[wireguard.peer]]").forEach((t, j) => {
        const peer = this.#peer(t, `wireguard.${i}.peer.${j}`, wg, wireguards);
        if (peer) wg.peers.push(peer);
      });
    });
    const checks = this.#array(doc.check, "check", "[[check]]").map((t, i) => this.#check(t, `check.${i}`));
    for (const n of nodes) {
      if (n.nat !== null && !this.#ifaces.get(n.name)?.has(n.nat)) {
        this.fail(
          this.lines.at(`node.${n.name}`, "nat"),
          `nat: node '${n.name}' has no interface '${n.nat}'`,
        );
      }
    }
    this.#addresses(links, wireguards);
    this.#ports(wireguards);
    if (this.#problems.length > 0) {
      const sorted = this.#problems.map((p, i) => ({ ...p, i })).sort((a, b) => a.line - b.line || a.i - b.i);
      throw new LabError(sorted.map((p) => `${this.file}:${p.line || 1}: ${p.message}`));
    }
    return { name, nodes, links, wireguards, checks };
  }

  // ---- the tables ----

  #name(doc: Table): string {
    const line = this.lines.at("", "name");
    if (doc.name === undefined) {
      this.fail(1, "missing 'name' (the lab's name, e.g. name = \"s2s\")");
      return "";
    }
    if (typeof doc.name !== "string") {
      this.fail(line, "'name' must be a string");
      return "";
    }
    if (!NAME_RE.test(doc.name)) {
      this.fail(
        line,
        `bad lab name '${doc.name}': lower-case letters, digits and '-' (it prefixes namespace names)`,
      );
    }
    return doc.name;
  }

  #nodes(value: unknown, lab: string): LabNode[] {
    if (value === undefined) {
      this.fail(1, "no nodes: add at least one [node.NAME] table");
      return [];
    }
    if (!isTable(value)) {
      this.fail(this.lines.at("", "node"), "'node' must be a table of nodes ([node.NAME])");
      return [];
    }
    const out: LabNode[] = [];
    for (const [name, t] of Object.entries(value)) {
      const path = `node.${name}`;
      const line = this.lines.at(path) || this.lines.at("node", name);
      if (!NAME_RE.test(name)) {
        this.fail(line, `bad node name '${name}': lower-case letters, digits and '-'`);
      } else if (lab !== "" && `${lab}-${name}`.length > NETNS_NAME_MAX) {
        this.fail(line, `namespace name '${lab}-${name}' is longer than ${NETNS_NAME_MAX} characters`);
      }
      this.#ifaces.set(name, new Map());
      if (!isTable(t)) {
        this.fail(line, `node '${name}' must be a table ([node.${name}])`);
        continue;
      }
      this.#keys(t, NODE_KEYS, path, `[node.${name}]`);
      const routes = this.#strings(t, "routes", path) ?? [];
      routes.forEach((r) => {
        const dest = r.trim().split(/\s+/)[0] ?? "";
        if (dest !== "default" && parseCidr(dest) === null) {
          this.fail(
            this.lines.at(path, "routes"),
            `bad route '${r}' (\`ip route add\` syntax: "DEST via GATEWAY")`,
          );
        }
      });
      const sysctls: Record<string, string> = {};
      if (t.sysctls !== undefined) {
        const sl = this.lines.at(path, "sysctls");
        if (!isTable(t.sysctls)) this.fail(sl, "'sysctls' must be a table of name = value");
        else {
          for (const [k, v] of Object.entries(t.sysctls)) {
            if (!/^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$/.test(k)) this.fail(sl, `bad sysctl name '${k}'`);
            if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") {
              sysctls[k] = String(v);
            } else this.fail(sl, `sysctl '${k}' must be a string, a number or a boolean`);
          }
        }
      }
      out.push({
        name,
        line,
        routes,
        forward: this.#bool(t, "forward", path) ?? false,
        nat: this.#string(t, "nat", path),
        sysctls,
        exec: this.#exec(t, path),
      });
    }
    return out;
  }

  /** `exec`: a list whose items are a command line (split at spaces) or an argv list. */
  #exec(t: Table, path: string): string[][] {
    if (t.exec === undefined) return [];
    const line = this.lines.at(path, "exec");
    const bad = () =>
      this.fail(line, "'exec' must be a list of commands, each a string or a list of strings");
    if (!Array.isArray(t.exec)) {
      bad();
      return [];
    }
    const out: string[][] = [];
    for (const c of t.exec) {
      if (typeof c === "string" && c.trim() !== "") out.push(c.trim().split(/\s+/));
      else if (Array.isArray(c) && c.length > 0 && c.every((x) => typeof x === "string")) {
        out.push(c as string[]);
      } else return bad(), out;
    }
    return out;
  }

  #link(t: Table, path: string): LabLink {
    const line = this.lines.at(path);
    this.#keys(t, LINK_KEYS, path, "[[link]]");
    const ends: (LinkEnd | null)[] = [];
    const endsLine = this.lines.at(path, "ends");
    if (t.ends === undefined) this.fail(line, '[[link]] needs \'ends\' = ["node:ifname", "node:ifname"]');
    else if (!Array.isArray(t.ends) || t.ends.length !== 2 || !t.ends.every((e) => typeof e === "string")) {
      this.fail(endsLine, "'ends' must be two strings \"node:ifname\"");
    } else {
      for (const e of t.ends as string[]) ends.push(this.#end(e, endsLine, "ends"));
    }
    const addresses: [InterfaceAddress[], InterfaceAddress[]] = [[], []];
    if (t.addresses !== undefined) {
      const al = this.lines.at(path, "addresses");
      const a = t.addresses;
      if (!Array.isArray(a) || a.length !== 2 || !a.every((x) => Array.isArray(x))) {
        this.fail(al, '\'addresses\' must be two lists, one per end: [["192.0.2.1/24"], ["192.0.2.2/24"]]');
      } else {
        a.forEach((list, i) => addresses[i] = this.#addressList(list as unknown[], al));
      }
    }
    const none = { node: "", ifname: "" };
    const link: LabLink = {
      line,
      ends: [ends[0] ?? none, ends[1] ?? none],
      addresses,
      mtu: this.#int(t, "mtu", path, 68, 65535),
      netem: this.#netem(t, path),
    };
    // Each end that resolved is declared, so that later references to it are not reported as well.
    ends.forEach((e, i) => {
      if (e) this.#declare(e, { kind: "link", addresses: addresses[i]!, line: endsLine }, endsLine);
    });
    return link;
  }

  #netem(t: Table, path: string): LabLink["netem"] {
    if (t.netem === undefined) return null;
    const line = this.lines.at(path, "netem");
    if (!isTable(t.netem)) {
      this.fail(line, "'netem' must be a table: { delay_ms = 20, loss_percent = 1 }");
      return null;
    }
    this.#keys(t.netem, NETEM_KEYS, path, "netem", line);
    const num = (k: string, max: number): number => {
      const v = (t.netem as Table)[k];
      if (v === undefined) return 0;
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > max) {
        this.fail(line, `netem ${k} must be a number from 0 to ${max}`);
        return 0;
      }
      return v;
    };
    return { delayMs: num("delay_ms", 60_000), lossPercent: num("loss_percent", 100) };
  }

  #wireguard(t: Table, path: string): LabWireguard {
    const line = this.lines.at(path);
    this.#keys(t, WG_KEYS, path, "[[wireguard]]");
    const node = this.#string(t, "node", path);
    const name = this.#string(t, "name", path);
    if (node === null) this.fail(line, "[[wireguard]] needs 'node' (the node it is on)");
    if (name === null) this.fail(line, "[[wireguard]] needs 'name' (its interface name, e.g. \"wg0\")");
    const al = this.lines.at(path, "addresses");
    let addresses: InterfaceAddress[] = [];
    if (t.addresses !== undefined) {
      if (!Array.isArray(t.addresses)) this.fail(al, "'addresses' must be a list of strings");
      else addresses = this.#addressList(t.addresses, al);
    }
    let implementation: Implementation = { kind: "typetun" };
    const impl = this.#string(t, "implementation", path);
    if (impl === "wireguard-go") implementation = { kind: "wireguard-go" };
    else if (impl !== null && impl.includes("/")) implementation = { kind: "path", path: impl };
    else if (impl !== null && impl !== "typetun") {
      this.fail(
        this.lines.at(path, "implementation"),
        `unknown implementation '${impl}' ("typetun", "wireguard-go", or a path to a program)`,
      );
    }
    const wg: LabWireguard = {
      line,
      node: node ?? "",
      name: name ?? "",
      addresses,
      listenPort: this.#int(t, "listen_port", path, 0, 65535),
      implementation,
      mtu: this.#int(t, "mtu", path, 68, 65535),
      peers: [],
    };
    if (node !== null && name !== null) {
      const nl = this.lines.at(path, "node");
      const nameLine = this.lines.at(path, "name");
      if (!this.#ifaces.has(node)) this.fail(nl, unknownNode(node, this.#ifaces));
      else if (this.#ifname(name, nameLine)) {
        this.#declare({ node, ifname: name }, { kind: "wireguard", addresses, line: nameLine }, nameLine);
      }
    }
    return wg;
  }

  #peer(t: Table, path: string, wg: LabWireguard, all: LabWireguard[]): LabPeer | null {
    const line = this.lines.at(path);
    this.#keys(t, PEER_KEYS, path, "[[wireguard.peer]]");
    const to = this.#string(t, "to", path);
    const toLine = this.lines.at(path, "to");
    const keepalive = this.#int(t, "persistent_keepalive", path, 0, 65535) ?? 0;
    const presharedKey = this.#bool(t, "preshared_key", path) ?? false;
    let allowedIps: Cidr[] | null = null;
    if (t.allowed_ips !== undefined) {
      const al = this.lines.at(path, "allowed_ips");
      const list = this.#strings(t, "allowed_ips", path);
      if (list) {
        allowedIps = [];
        for (const s of list) {
          const c = parseCidr(s);
          if (c) allowedIps.push(c);
          else this.fail(al, `bad allowed IP '${s}' (an address/prefix, e.g. 10.10.0.2/32)`);
        }
      }
    }
    // The endpoint is resolved first, so that its problems are reported even when `to` has one too.
    const endpoint = this.#string(t, "endpoint", path);
    const el = this.lines.at(path, "endpoint");
    const ep = endpoint === null ? null : this.#end(endpoint, el, "endpoint");
    if (to === null) {
      this.fail(line, "[[wireguard.peer]] needs 'to' = \"node:wgname\" (another [[wireguard]] of the lab)");
      return null;
    }
    const target = this.#end(to, toLine, "to");
    if (!target) return null;
    const other = all.find((w) => w.node === target.node && w.name === target.ifname);
    if (target.node === wg.node && target.ifname === wg.name) {
      this.fail(toLine, `peer to itself: '${to}' is the interface this peer belongs to`);
      return null;
    }
    if (!other) {
      const kind = this.#ifaces.get(target.node)?.get(target.ifname)?.kind;
      this.fail(
        toLine,
        kind === "link"
          ? `peer to '${to}', a link's interface, not a [[wireguard]]`
          : `peer to '${to}': no [[wireguard]] named '${target.ifname}' on node '${target.node}'`,
      );
      return null;
    }
    if (wg.peers.some((p) => p.to.node === target.node && p.to.name === target.ifname)) {
      this.fail(toLine, `a second peer to '${to}' on ${wg.node}:${wg.name}`);
    }
    if (allowedIps === null && other.addresses.length === 0) {
      this.fail(toLine, `peer to '${to}', which has no addresses: give this peer allowed_ips`);
    }
    if (ep) {
      const iface = this.#ifaces.get(ep.node)!.get(ep.ifname)!;
      if (ep.node !== target.node) {
        this.fail(el, `endpoint '${endpoint}' is not on node '${target.node}', where '${to}' listens`);
      } else if (iface.addresses.length === 0) {
        this.fail(el, `endpoint '${endpoint}' has no address`);
      } else {
        // The endpoint is the interface's first address; this node must have a way out in that family.
        const family = iface.addresses[0]!.family;
        const local = [...this.#ifaces.get(wg.node)!.values()].filter((i) => i.kind === "link");
        if (!local.some((i) => i.addresses.some((a) => a.family === family))) {
          this.fail(
            el,
            `endpoint '${endpoint}' is IPv${family} (its first address) but node '${wg.node}' has no IPv${family} address on a link`,
          );
        }
      }
    }
    return {
      line,
      to: { node: target.node, name: target.ifname },
      endpoint: ep,
      allowedIps: allowedIps ?? other.addresses.map((a) => hostRoute(a)),
      persistentKeepalive: keepalive,
      presharedKey,
    };
  }

  #check(t: Table, path: string): LabCheck {
    const line = this.lines.at(path);
    this.#keys(t, CHECK_KEYS, path, "[[check]]");
    const from = this.#string(t, "from", path);
    const ping = this.#string(t, "ping", path);
    if (from === null) this.fail(line, "[[check]] needs 'from' (a node)");
    else if (!this.#ifaces.has(from)) this.fail(this.lines.at(path, "from"), unknownNode(from, this.#ifaces));
    if (ping === null) this.fail(line, "[[check]] needs 'ping' (an address, or \"node:ifname\")");
    else if (ping.includes("/") || parseCidr(ping) === null) {
      const pl = this.lines.at(path, "ping");
      if (!/^[^:]+:[^:]+$/.test(ping)) {
        this.fail(pl, `bad ping target '${ping}' (an address, or "node:ifname")`);
      } else {
        const e = this.#end(ping, pl, "ping");
        if (e && this.#ifaces.get(e.node)?.get(e.ifname)?.addresses.length === 0) {
          this.fail(pl, `ping '${ping}': that interface has no address`);
        }
      }
    }
    const expect = this.#string(t, "expect", path) ?? "reach";
    if (expect !== "reach" && expect !== "blocked") {
      this.fail(this.lines.at(path, "expect"), `expect must be "reach" or "blocked", not '${expect}'`);
    }
    return { line, from: from ?? "", ping: ping ?? "", expect: expect === "blocked" ? "blocked" : "reach" };
  }

  // ---- names and addresses ----

  /** "node:ifname", resolved against the nodes; reports problems and returns null on any. */
  #end(s: string, line: number, key: string): LinkEnd | null {
    const m = /^([^:]*):([^:]*)$/.exec(s);
    if (!m || m[1] === "" || m[2] === "") {
      this.fail(line, `${key}: '${s}' is not "node:ifname"`);
      return null;
    }
    const [node, ifname] = [m[1]!, m[2]!];
    if (!this.#ifaces.has(node)) {
      this.fail(line, `${key}: ${unknownNode(node, this.#ifaces)}`);
      return null;
    }
    if (!this.#ifname(ifname, line)) return null;
    if (key !== "ends" && !this.#ifaces.get(node)!.has(ifname)) {
      const names = [...this.#ifaces.get(node)!.keys()];
      this.fail(line, `${key}: node '${node}' has no interface '${ifname}'${hint(ifname, names)}`);
      return null;
    }
    return { node, ifname };
  }

  #ifname(name: string, line: number): boolean {
    const bytes = new TextEncoder().encode(name).length;
    if (bytes > IFNAME_MAX) {
      this.fail(line, `interface name '${name}' is ${bytes} bytes; Linux allows ${IFNAME_MAX}`);
      return false;
    }
    if (!IFNAME_RE.test(name) || name === "." || name === ".." || name === "lo") {
      this.fail(line, `bad interface name '${name}' (letters, digits, '_', '.', '-'; not "lo")`);
      return false;
    }
    return true;
  }

  /** Links and [[wireguard]]s share a node's interface names. */
  #declare(end: LinkEnd, iface: Iface, line: number): void {
    const names = this.#ifaces.get(end.node)!;
    const prev = names.get(end.ifname);
    if (prev) {
      this.fail(
        line,
        `interface '${end.ifname}' declared twice on node '${end.node}' (first by a ${
          prev.kind === "link" ? "[[link]]" : "[[wireguard]]"
        } on line ${prev.line})`,
      );
      return;
    }
    names.set(end.ifname, iface);
  }

  #addressList(list: unknown[], line: number): InterfaceAddress[] {
    const out: InterfaceAddress[] = [];
    for (const s of list) {
      const a = typeof s === "string" ? parseInterfaceAddress(s) : null;
      if (a) out.push(a);
      else this.fail(line, `bad address ${JSON.stringify(s)} (an address/prefix, e.g. 192.0.2.1/24)`);
    }
    return out;
  }

  /**
   * The same address twice in the lab, and links whose subnets overlap (or overlap a tunnel's): either would
   * make the kernel pick one route for two places. The interfaces of one tunnel share its subnet by design.
   */
  #addresses(links: LabLink[], wireguards: LabWireguard[]): void {
    type Net = { owner: string; group: string; line: number; a: InterfaceAddress };
    const nets: Net[] = [];
    links.forEach((l, i) => {
      const line = this.lines.at(`link.${i}`, "addresses");
      l.ends.forEach((e, j) =>
        l.addresses[j]!.forEach((a) =>
          nets.push({ owner: `${e.node}:${e.ifname}`, group: `link${i}`, line, a })
        )
      );
    });
    wireguards.forEach((w, i) => {
      const line = this.lines.at(`wireguard.${i}`, "addresses");
      for (const a of w.addresses) nets.push({ owner: `${w.node}:${w.name}`, group: "wg", line, a });
    });
    const seen = new Map<string, Net>();
    for (const n of nets) {
      const key = formatAddress(n.a.addr);
      const prev = seen.get(key);
      if (prev) {
        this.fail(n.line, `address ${key} on ${n.owner} is already on ${prev.owner} (line ${prev.line})`);
      } else seen.set(key, n);
    }
    const reported = new Set<string>();
    for (let i = 0; i < nets.length; i++) {
      for (let j = 0; j < i; j++) {
        const [x, y] = [nets[j]!, nets[i]!];
        if (x.group === y.group || (x.group === "wg" && y.group === "wg") || x.a.family !== y.a.family) {
          continue;
        }
        const len = Math.min(x.a.prefixLen, y.a.prefixLen);
        if (!sameBytes(maskAddress(x.a.addr, len), maskAddress(y.a.addr, len))) continue;
        const pair = `${x.group}|${y.group}|${len}`;
        if (reported.has(pair)) continue;
        reported.add(pair);
        this.fail(
          y.line,
          `subnet ${netOf(y.a)} of ${y.owner} overlaps ${
            netOf(x.a)
          } of ${x.owner} (line ${x.line}), on another link`,
        );
      }
    }
  }

  /** Two daemons of one node cannot bind the same UDP port (each namespace has its own ports). */
  #ports(wireguards: LabWireguard[]): void {
    const seen = new Map<string, LabWireguard>();
    wireguards.forEach((w, i) => {
      if (w.listenPort === null || w.listenPort === 0) return;
      const key = `${w.node}\0${w.listenPort}`;
      const prev = seen.get(key);
      if (prev) {
        this.fail(
          this.lines.at(`wireguard.${i}`, "listen_port"),
          `listen_port ${w.listenPort} of ${w.node}:${w.name} is already ${w.node}:${prev.name}'s (line ${prev.line})`,
        );
      } else seen.set(key, w);
    });
  }

  // ---- keys and types ----

  #keys(t: Table, known: readonly string[], path: string, where: string, line?: number): void {
    for (const k of Object.keys(t)) {
      if (known.includes(k)) continue;
      this.fail(line ?? this.lines.at(path, k), `unknown key '${k}' in ${where}${hint(k, known)}`);
    }
  }

  #array(value: unknown, path: string, what: string): Table[] {
    if (value === undefined) return [];
    if (!Array.isArray(value) || !value.every(isTable)) {
      const [parent, key] = splitPath(path);
      this.fail(this.lines.at(parent, key), `'${key}' must be an array of tables (${what})`);
      return [];
    }
    return value as Table[];
  }

  #string(t: Table, key: string, path: string): string | null {
    const v = t[key];
    if (v === undefined) return null;
    if (typeof v !== "string") {
      this.fail(this.lines.at(path, key), `'${key}' must be a string`);
      return null;
    }
    return v;
  }

  #strings(t: Table, key: string, path: string): string[] | null {
    const v = t[key];
    if (v === undefined) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
      this.fail(this.lines.at(path, key), `'${key}' must be a list of strings`);
      return null;
    }
    return v as string[];
  }

  #bool(t: Table, key: string, path: string): boolean | null {
    const v = t[key];
    if (v === undefined) return null;
    if (typeof v !== "boolean") {
      this.fail(this.lines.at(path, key), `'${key}' must be true or false`);
      return null;
    }
    return v;
  }

  #int(t: Table, key: string, path: string, min: number, max: number): number | null {
    const v = t[key];
    if (v === undefined) return null;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      this.fail(this.lines.at(path, key), `'${key}' must be an integer from ${min} to ${max}`);
      return null;
    }
    return v;
  }
}

function isTable(v: unknown): v is Table {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function splitPath(path: string): [string, string] {
  const dot = path.lastIndexOf(".");
  return dot < 0 ? ["", path] : [path.slice(0, dot), path.slice(dot + 1)];
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function netOf(a: InterfaceAddress): string {
  return formatCidr({ family: a.family, addr: maskAddress(a.addr, a.prefixLen), prefixLen: a.prefixLen });
}

/** An interface address as the allowed IP that reaches only it: /32 or /128. */
function hostRoute(a: InterfaceAddress): Cidr {
  return { family: a.family, addr: a.addr.slice(), prefixLen: a.addr.length * 8 };
}

function unknownNode(name: string, nodes: Map<string, unknown>): string {
  return `unknown node '${name}'${hint(name, [...nodes.keys()])}`;
}

/**
 * " (did you mean 'Y'?)" for the closest candidate within a third of the word's length (at least one edit,
 * but fewer than the word has characters: 'q' is not a typo of 'a'), else "".
 */
function hint(word: string, candidates: readonly string[]): string {
  let best: string | null = null;
  let bestD = Math.min(Math.max(1, Math.floor(word.length / 3)), word.length - 1) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best === null ? "" : ` (did you mean '${best}'?)`;
}

/** Levenshtein distance with adjacent transpositions counted as one edit (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        rows[0]!.push(j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      }
      rows[i]!.push(d);
    }
  }
  return rows[a.length]![b.length]!;
}

/**
 * The lines of a lab file's tables and keys, for messages. lib/toml.ts's locator tells [[Peer]] elements
 * apart but not elements of a nested array of tables ([[wireguard.peer]] under each [[wireguard]]), which a lab
 * needs, so this one keys every table by its full path with element indices: `wireguard.1.peer.0`. It reads
 * line by line, skipping the inside of arrays and inline tables that span lines (so a string in them is never
 * taken for a key); multi-line strings are not followed, which lab files have no use for.
 */
export class LabLines {
  readonly #lines = new Map<string, number>();

  constructor(text: string) {
    const counts = new Map<string, number>();
    /** The current element of every array of tables, by path: `[[a.b]]` is under a's latest element. */
    const resolve = (parts: string[]): string => {
      let path = "";
      for (const p of parts) {
        path = path === "" ? p : `${path}.${p}`;
        const n = counts.get(path);
        if (n !== undefined) path = `${path}.${n - 1}`;
      }
      return path;
    };
    let table = "";
    let depth = 0;
    text.split("\n").forEach((raw, i) => {
      const line = i + 1;
      let rest = raw;
      if (depth === 0) {
        const h = /^\s*(\[\[?)([^\]]*)\]/.exec(raw);
        if (h) {
          const parts = splitKey(h[2]!);
          if (h[1] === "[[") {
            const base = resolve(parts.slice(0, -1));
            const at = base === "" ? parts.at(-1)! : `${base}.${parts.at(-1)!}`;
            const n = counts.get(at) ?? 0;
            counts.set(at, n + 1);
            table = `${at}.${n}`;
          } else {
            table = resolve(parts);
          }
          this.#set(table, "", line);
          // `[node.a]` also gives node's key `a` a line.
          const dot = table.lastIndexOf(".");
          if (dot > 0) this.#set(table.slice(0, dot), table.slice(dot + 1), line);
          return;
        }
        const k = /^\s*([A-Za-z0-9_-]+|"[^"]*"|'[^']*')\s*[=.]/.exec(raw);
        if (!k) return;
        this.#set(table, unquote(k[1]!), line);
        rest = raw.slice(k[0].length);
      }
      depth = Math.max(0, depth + nesting(rest));
    });
  }

  #set(table: string, key: string, line: number): void {
    const k = `${table}\0${key}`;
    if (!this.#lines.has(k)) this.#lines.set(k, line);
  }

  /** The line of `key` in the table at `path` ("" is the top level), else of the table's header; else 0. */
  at(path: string, key = ""): number {
    return this.#lines.get(`${path}\0${key}`) ?? this.#lines.get(`${path}\0`) ?? 0;
  }
}

function splitKey(s: string): string[] {
  return (s.match(/"[^"]*"|'[^']*'|[^.]+/g) ?? []).map((p) => unquote(p.trim())).filter((p) => p !== "");
}

function unquote(s: string): string {
  return (s.startsWith('"') || s.startsWith("'")) && s.length >= 2 ? s.slice(1, -1) : s;
}

/** How much deeper in `[` and `{` a line leaves us, outside strings and comments. */
function nesting(s: string): number {
  let d = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === "#") break;
    if (c === '"' || c === "'") {
      const end = c === '"' ? closingQuote(s, i) : s.indexOf("'", i + 1);
      if (end < 0) break;
      i = end;
    } else if (c === "[" || c === "{") d++;
    else if (c === "]" || c === "}") d--;
  }
  return d;
}

function closingQuote(s: string, from: number): number {
  for (let i = from + 1; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if (s[i] === '"') return i;
  }
  return -1;
}
