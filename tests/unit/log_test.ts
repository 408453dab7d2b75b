import assert from "node:assert/strict";
import { formatFromEnv, jsonLine } from "../../cmd/log.ts";

Deno.test("LOG_FORMAT=json: one JSON object per line with time, level, interface and message", () => {
  assert.equal(formatFromEnv("json"), "json");
  assert.equal(formatFromEnv("JSON"), "json");
  assert.equal(formatFromEnv(undefined), "text");
  assert.equal(formatFromEnv("text"), "text");
  const line = jsonLine("info", "wg0", 'Peer "x"\nsecond line', new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)));
  assert.ok(line.endsWith("\n"));
  assert.equal(line.indexOf("\n"), line.length - 1, "a message's line break stays inside the one line");
  assert.deepEqual(JSON.parse(line), {
    time: "2026-01-02T03:04:05.006Z",
    level: "info",
    interface: "wg0",
    message: 'Peer "x"\nsecond line',
  });
  assert.deepEqual(Object.keys(JSON.parse(jsonLine("error", null, "m"))), [
    "time",
    "level",
    "interface",
    "message",
  ]);
});
