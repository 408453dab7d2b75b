/**
 * Sends handshake-initiation-shaped junk (type 1, three zero bytes, 144 random bytes: 148 in all, so it passes the
 * length check and costs the receiver a MAC1 computation) to HOST:PORT, at RATE datagrams per second, or as fast
 * as it can with RATE 0. Prints "sent N" about every 250 ms. Run by tests/netns/junk_test.ts, which kills it.
 *
 * Given the target's public key (base64), each body carries a valid MAC1 instead: the flood of an attacker who
 * knows the key, which costs the target a DH unless it is under load. The sender then also counts the cookie
 * replies (type 3) it gets back, and reports them as "cookies N".
 *
 *   deno run -A tests/netns/_junk_sender.ts HOST PORT RATE [PUBLIC-KEY]
 */
import dgram from "node:dgram";
import { randomFillSync } from "node:crypto";
import process from "node:process";
import { CookieGenerator } from "../../lib/cookie.ts";
import { keyFromBase64 } from "../../lib/encoding.ts";

const [host, portArg, rateArg, keyArg] = process.argv.slice(2);
const port = Number(portArg), rate = Number(rateArg);
if (!host || !(port > 0) || !(rate >= 0)) {
  process.stderr.write("usage: _junk_sender.ts HOST PORT RATE [PUBLIC-KEY]\n");
  process.exit(2);
}

const key = keyArg ? keyFromBase64(keyArg) : null;
if (keyArg && !key) {
  process.stderr.write(`_junk_sender.ts: not a public key: ${keyArg}\n`);
  process.exit(2);
}
const macs = key ? new CookieGenerator(key) : null;
const sock = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
let cookies = 0;
sock.on("message", (msg) => {
  if (msg[0] === 3) cookies++;
});
// A pool of random bodies, so that making junk costs the sender nothing per datagram.
const POOL = 1024;
const pool = Array.from({ length: POOL }, () => {
  const b = randomFillSync(new Uint8Array(148));
  b.set([1, 0, 0, 0]);
  macs?.addMacs(b, 0);
  return b;
});
let sent = 0;
let inFlight = 0;
const start = performance.now();

function sendOne(): void {
  inFlight++;
  sock.send(pool[sent++ % POOL]!, port, host, () => inFlight--);
}

setInterval(
  () =>
    process.stdout.write(`sent ${sent} in ${Math.round(performance.now() - start)} ms, cookies ${cookies}\n`),
  250,
);

if (rate > 0) {
  // Paced: every 10 ms, catch up to rate × elapsed time.
  setInterval(() => {
    const due = Math.floor(((performance.now() - start) * rate) / 1000);
    while (sent < due) sendOne();
  }, 10);
} else {
  // Flat out, keeping a bounded number of sends in flight so the runtime's queue does not grow without end.
  const pump = () => {
    while (inFlight < 256) sendOne();
    setImmediate(pump);
  };
  pump();
}
