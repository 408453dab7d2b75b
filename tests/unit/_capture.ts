/** A capture client for the unit tests of cmd/capture_server.ts (what `typetun capture` does, in short). */
import { connect, createServer, type Socket } from "node:net";

/** Asks for a capture and collects the data stream until it ends; `stop()` half-closes the control. */
export async function capture(path: string, dir: string, options = "") {
  const dataPath = `${dir}/d${Math.random().toString(36).slice(2)}.sock`;
  const chunks: Uint8Array[] = [];
  let ended!: () => void;
  const done = new Promise<void>((r) => (ended = r));
  const server = createServer((c: Socket) => {
    c.on("data", (d: Uint8Array) => chunks.push(d));
    c.on("close", () => ended());
  });
  await new Promise<void>((r) => server.listen(dataPath, () => r()));
  const control = connect(path);
  let reply = "";
  control.on("data", (d) => (reply += d.toString()));
  const closed = new Promise<void>((r) => control.on("close", () => r()));
  control.write(`capture${options} data=${dataPath} token=00112233445566778899\n`);
  for (let i = 0; i < 100 && reply === ""; i++) await new Promise((r) => setTimeout(r, 10));
  return {
    reply: () => reply,
    stop: async () => {
      control.end();
      await Promise.race([done, closed.then(() => done)]);
      server.close();
      const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.length;
      }
      return all;
    },
    closed,
  };
}
