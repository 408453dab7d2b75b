/**
 * The UAPI server (cmd/uapi_server.ts) on a socket in /tmp, with a stand-in handler: no root, no daemon. What a
 * client sees: replies in order, half-closed connections, refusals it can read, the idle timeout, the cap on
 * connections; and what the daemon gains: a client that does not read stops being read, and requests are
 * handled one per turn of the event loop.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { setImmediate } from "node:timers";
import { UapiServer, type UapiServerOptions } from "../../cmd/uapi_server.ts";
import { Level, Logger } from "../../cmd/log.ts";
import { formatErrno, type UapiRequest } from "../../lib/uapi.ts";

let serial = 0;

/** A server whose handler numbers the gets and records every request, on a fresh socket path. */
async function withServer(
  options: UapiServerOptions,
  fn: (ctx: { path: string; seen: UapiRequest[]; server: UapiServer }) => Promise<void>,
  reply: (req: UapiRequest, n: number) => string = (req, n) =>
    req.op === "get" ? `n=${n}\n${formatErrno(0)}` : formatErrno(req.op === "error" ? req.errno : 0),
): Promise<void> {
  const path = `/tmp/typetun-uapi-${process.pid}-${serial++}.sock`;
  rmSync(path, { force: true });
  const server = await UapiServer.listen(path, new Logger(Level.Silent, "test"), options);
  const seen: UapiRequest[] = [];
  server.serve((req) => {
    seen.push(req);
    return reply(req, seen.length);
  });
  try {
    await fn({ path, seen, server });
  } finally {
    server.close();
    rmSync(path, { force: true });
  }
}

/** Connects; collects what the server sends until it closes the connection. */
function client(path: string): { sock: Socket; received: () => string; closed: Promise<string> } {
  const sock = connect(path);
  let text = "";
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => (text += d));
  sock.on("error", () => {});
  const closed = new Promise<string>((resolve) => sock.on("close", () => resolve(text)));
  return { sock, received: () => text, closed };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "uapi server: pipelined requests answered in order; a half-closed client still gets every reply",
  ...opts,
  fn: () =>
    withServer({}, async ({ path, seen }) => {
      const c = client(path);
      // A set cut short by the end of input is still a request (wireguard-go's scanner does the same).
      c.sock.end("get=1\n\nset=1\nfwmark=1\n\nget=1\n\nset=1\nfwmark=2");
      assert.equal(await c.closed, "n=1\nerrno=0\n\nerrno=0\n\nn=3\nerrno=0\n\nerrno=0\n\n");
      assert.deepEqual(seen.map((r) => r.op), ["get", "set", "get", "set"]);
      assert.deepEqual(seen[3], { op: "set", body: "fwmark=2" });
    }),
});

Deno.test({
  name: "uapi server: what is not the protocol gets an errno, then the connection is closed",
  ...opts,
  fn: () =>
    withServer({}, async ({ path }) => {
      const c = client(path);
      c.sock.write("get=1\n\nbogus\nget=1\n\n");
      assert.equal(await c.closed, "n=1\nerrno=0\n\nerrno=-71\n\n");
    }),
});

Deno.test({
  name: "uapi server: a request over the limit is refused with EMSGSIZE, readable after writing it all",
  ...opts,
  fn: () =>
    withServer({ maxRequestBytes: 64 << 10 }, async ({ path, seen }) => {
      const c = client(path);
      // wg writes the whole request before it reads: the server reads and drops the rest (up to the limit
      // again), so this succeeds.
      const big = `set=1\n${"fwmark=0\n".repeat(11_000)}\n`; // 99 KB
      const wrote = new Promise<Error | null | undefined>((r) => c.sock.write(big, r));
      assert.ok(!(await wrote), "the whole request was written");
      c.sock.end();
      assert.equal(await c.closed, "errno=-90\n\n");
      assert.deepEqual(seen.map((r) => r.op), ["error"]);
    }),
});

Deno.test({
  name:
    "uapi server: a connection that sends nothing is closed after the idle timeout; one that talks is not",
  ...opts,
  fn: () =>
    withServer({ idleTimeoutMs: 300 }, async ({ path, server }) => {
      const t0 = performance.now();
      const quiet = client(path);
      let quietClosed = 0;
      void quiet.closed.then(() => (quietClosed = performance.now() - t0));
      const chatty = client(path);
      for (let i = 0; i < 8; i++) {
        chatty.sock.write("get=1\n\n");
        await sleep(100);
      }
      assert.ok(quietClosed >= 290 && quietClosed < 700, `the quiet one closed after ${quietClosed} ms`);
      assert.equal(
        chatty.received().split("errno=0").length - 1,
        8,
        "the chatty one was answered throughout",
      );
      assert.equal(server.connections, 1, "the chatty one is still open");
      chatty.sock.destroy();
    }),
});

Deno.test({
  name: "uapi server: beyond the cap a newcomer displaces the oldest idle connection and is served",
  ...opts,
  fn: () =>
    withServer({ maxConnections: 3 }, async ({ path, server }) => {
      const idle = [client(path), client(path), client(path)];
      await sleep(100);
      assert.equal(server.connections, 3);
      const c = client(path);
      c.sock.write("get=1\n\n");
      assert.equal(await idle[0]!.closed, "", "the oldest idle one was closed");
      await sleep(100);
      assert.equal(c.received(), "n=1\nerrno=0\n\n");
      assert.equal(server.connections, 3);
      for (const x of [...idle, c]) x.sock.destroy();
    }),
});

Deno.test({
  name: "uapi server: a client that never reads its replies stops being read (backpressure)",
  ...opts,
  fn: () =>
    withServer({}, async ({ path, seen }) => {
      const sock = connect(path);
      sock.on("error", () => {});
      sock.pause(); // never reads
      const block = "get=1\n\n".repeat(4096);
      let written = 0;
      const until = performance.now() + 1000;
      let midway = -1;
      while (performance.now() < until) {
        if (midway < 0 && performance.now() > until - 500) midway = seen.length;
        if (sock.write(block)) written += block.length;
        else await sleep(20);
      }
      // The replies are 1 KiB: what the socket buffers hold, and then nothing more.
      assert.ok(midway > 0, "requests were handled");
      assert.equal(
        seen.length,
        midway,
        `no request handled in the last 500 ms (${midway} -> ${seen.length})`,
      );
      assert.ok(seen.length < written / 7, `${seen.length} of ${written / 7} requests handled`);
      sock.destroy();
    }, (_req, n) => `n=${n}\n${"x=1\n".repeat(256)}${formatErrno(0)}`),
});

Deno.test({
  name: "uapi server: one request per connection per turn of the event loop",
  ...opts,
  fn: async () => {
    // Turns of the event loop, counted by a setImmediate chain (the data plane yields the same way).
    let turns = 0, running = true;
    const tick = () => {
      turns++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    const turnOf: number[] = [];
    const n = 500;
    await withServer({}, async ({ path, seen }) => {
      const c = client(path);
      c.sock.write("get=1\n\n".repeat(n)); // arrives in one or a few reads
      while (seen.length < n) await new Promise((r) => setImmediate(r));
      c.sock.destroy();
    }, (_req, k) => {
      turnOf.push(turns);
      return `n=${k}\n${formatErrno(0)}`;
    });
    running = false;
    // The loop turned between any two requests: none waited behind another one's slice.
    for (let i = 1; i < n; i++) {
      assert.ok(turnOf[i]! > turnOf[i - 1]!, `requests ${i - 1} and ${i} in one turn`);
    }
  },
});
