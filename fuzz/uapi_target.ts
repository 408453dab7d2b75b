/**
 * The UAPI (lib/uapi.ts) and `Device.apply`. One input is a stream of requests a client might write (valid,
 * malformed and mutated) and checks that:
 * - UapiReader frames it the same way whether it arrives whole or in random chunks, and as a plain reference
 *   framing does (operation, errno and body; messages may differ);
 * - parseSet never throws, and what it accepts survives formatSet → parseSet unchanged;
 * - applying it to a Device leaves the configuration a simple model predicts (uapi_model.ts), and what
 *   formatGet reports of it survives parseGet → formatGet unchanged.
 * @module
 */
import { Device } from "../lib/device.ts";
import { formatGet, formatSet, parseGet, parseSet, UapiReader, type UapiRequest } from "../lib/uapi.ts";
import { keyToHex } from "../lib/encoding.ts";
import type { Prng } from "./prng.ts";
import { check, mutate, type Target } from "./target.ts";
import { DeviceModel } from "./uapi_model.ts";
import { FakeClock } from "./device_world.ts";

const GET = "get=1\n";
const SET = "set=1\n";
const EINVAL = 22;
const EPROTO = 71;

/** A request as compared: the operation and its body or errno. */
type Framed = { op: "get" } | { op: "set"; body: string } | { op: "error"; errno: number };

/** The reference framing of a whole stream, as the UapiReader documents it (input ended after it). */
export function frameReference(s: string): Framed[] {
  const out: Framed[] = [];
  let pos = 0;
  while (pos < s.length) {
    if (s.startsWith(GET, pos)) {
      if (pos + GET.length === s.length) break; // waits for the blank line, then the input ends
      if (s[pos + GET.length] !== "\n") return [...out, { op: "error", errno: EINVAL }];
      out.push({ op: "get" });
      pos += GET.length + 1;
    } else if (s.startsWith(SET, pos)) {
      const end = s.indexOf("\n\n", pos + SET.length - 1);
      if (end < 0) return [...out, { op: "set", body: s.slice(pos + SET.length) }]; // cut short by the end
      out.push({ op: "set", body: s.slice(pos + SET.length, end + 1) });
      pos = end + 2;
    } else {
      const rest = s.slice(pos);
      if (rest.length < GET.length && (GET.startsWith(rest) || SET.startsWith(rest))) break;
      return [...out, { op: "error", errno: EPROTO }];
    }
  }
  return out;
}

function simplify(r: UapiRequest): Framed {
  if (r.op === "set") return { op: "set", body: r.body };
  if (r.op === "error") return { op: "error", errno: r.errno };
  return { op: "get" };
}

export function uapiTarget(p: Prng): Target {
  const clock = new FakeClock();
  const rng = p.rng();
  let device = new Device({ clock, rng });
  let model = new DeviceModel();
  const keys = Array.from({ length: 6 }, () => p.bytes(32));
  let input = "";
  let applied = 0;

  const value = (key: string): string => {
    switch (key) {
      case "private_key":
      case "public_key":
      case "preshared_key":
        return p.chance(0.9)
          ? keyToHex(p.chance(0.1) ? new Uint8Array(32) : p.pick(keys))
          : p.pick(["", "00", "G".repeat(64), keyToHex(p.bytes(32)).toUpperCase()]);
      case "listen_port":
      case "persistent_keepalive_interval":
      case "fwmark":
        return p.pick([
          "0",
          "1",
          "25",
          "65535",
          "65536",
          "4294967295",
          "4294967296",
          "-1",
          "+1",
          " 1",
          "0x10",
          "",
          "01",
        ]);
      case "endpoint":
        return p.pick([
          "192.0.2.1:51820",
          "[2001:db8::1]:1",
          "[::ffff:1.2.3.4]:0",
          "1.2.3.4",
          "host:1",
          "[::1]:65536",
          ":1",
        ]);
      case "allowed_ip":
        return p.pick([
          "10.0.0.0/8",
          "10.1.2.3/32",
          "10.1.2.3/24",
          "0.0.0.0/0",
          "::/0",
          "fd00::1/128",
          "fd00::/7",
          "1.2.3.4/33",
          "1.2.3.4",
          "::/129",
          "1.2.3.4/-1",
        ]);
      case "protocol_version":
        return p.pick(["1", "2", ""]);
      default:
        return p.pick(["true", "false", "", "1"]);
    }
  };
  const KEYS = [
    "private_key",
    "listen_port",
    "fwmark",
    "replace_peers",
    "public_key",
    "remove",
    "update_only",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
    "bogus",
    "",
  ];
  const body = (): string => {
    let s = "";
    const n = p.size(20);
    for (let i = 0; i < n; i++) {
      const k = i === 0 || p.chance(0.3) ? p.pick(KEYS.slice(0, 5)) : p.pick(KEYS);
      s += p.chance(0.98) ? `${k}=${value(k)}\n` : `${k}\n`;
    }
    return s;
  };
  const stream = (): string => {
    let s = "";
    const n = p.int(1, 5);
    for (let i = 0; i < n; i++) {
      const r = p.below(10);
      if (r < 3) s += "get=1\n\n";
      else if (r < 8) s += `set=1\n${body()}\n`;
      else {s += p.pick([
          "get=1\nx",
          "GET=1\n\n",
          "set=2\n",
          "\n",
          "get=1",
          "se",
          "set=1\nlisten_port=1",
          "é\n",
        ]);}
    }
    if (p.chance(0.2)) s = new TextDecoder().decode(mutate(p, new TextEncoder().encode(s)));
    return s;
  };

  return {
    get input() {
      return input;
    },
    step() {
      if (p.chance(0.002)) {
        device = new Device({ clock, rng });
        model = new DeviceModel();
      }
      input = stream();
      const want = frameReference(input);
      const whole = new UapiReader();
      const a = [...whole.push(input), ...whole.end()].map(simplify);
      // The same stream as bytes in random pieces, which may split a UTF-8 character.
      const bytes = new TextEncoder().encode(input);
      const chunked = new UapiReader();
      const b: Framed[] = [];
      for (let i = 0; i < bytes.length;) {
        const n = p.chance(0.3) ? 1 : p.int(1, 40);
        b.push(...chunked.push(bytes.subarray(i, i + n)).map(simplify));
        i += n;
      }
      b.push(...chunked.end().map(simplify));
      // With a small request limit: the reader never holds more than the limit and one piece, returns no
      // longer body, and frames requests well under the limit as the reference does.
      const limit = p.int(8, 400);
      const limited = new UapiReader({ maxRequestBytes: limit });
      const c: Framed[] = [];
      for (let i = 0; i < bytes.length;) {
        const n = p.int(1, 40);
        c.push(...limited.push(bytes.subarray(i, i + n)).map(simplify));
        check(limited.pending <= limit + n, () => `reader holds ${limited.pending} bytes, limit ${limit}`);
        i += n;
      }
      c.push(...limited.end().map(simplify));
      for (const r of c) {
        if (r.op === "set") {
          check(new TextEncoder().encode(r.body).length <= limit, "a body over the limit was returned");
        }
      }
      if (bytes.length <= limit / 2) {
        check(JSON.stringify(c) === JSON.stringify(want), "framing under a limit it never reaches");
      }
      const show = (x: Framed[]) => JSON.stringify(x);
      check(show(a) === show(want), () => `framing: reader ${show(a)}, reference ${show(want)}`);
      check(show(b) === show(want), () => `framing in chunks: reader ${show(b)}, reference ${show(want)}`);

      for (const r of want) {
        if (r.op !== "set") continue;
        const parsed = parseSet(r.body);
        if (!parsed.ok) continue;
        const again = parseSet(formatSet(parsed.value));
        check(
          again.ok && formatSet(again.value) === formatSet(parsed.value),
          "formatSet → parseSet changed the update",
        );
        device.apply(parsed.value);
        model.apply(parsed.value);
        device.outbox.length = 0; // keepalives the update started; nobody listens
        applied++;
        const got = formatGet(device.info());
        const back = parseGet(`${got}errno=0\n\n`);
        check(back.ok && formatGet(back.value) === got, "formatGet → parseGet changed the configuration");
        const noStats = (s: string) =>
          s.split("\n").filter((l) => !/^(rx_bytes|tx_bytes|last_handshake)/.test(l)).join("\n");
        const expected = noStats(formatGet(model.info()));
        check(
          noStats(got) === expected,
          () => `after apply the device reports\n${noStats(got)}\nthe model\n${expected}`,
        );
      }
    },
    stats: () => ({ applied }),
  };
}
