import assert from "node:assert/strict";
import { parseRunAs } from "../../cmd/privilege.ts";

const PASSWD = `root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
typetun:x:990:991::/nonexistent:/usr/sbin/nologin
`;

Deno.test("--user: a name from /etc/passwd, a uid with or without an entry", () => {
  assert.deepEqual(parseRunAs("typetun", PASSWD), { uid: 990, gid: 991, name: "typetun" });
  assert.deepEqual(parseRunAs("990", PASSWD), { uid: 990, gid: 991, name: "990" });
  assert.deepEqual(parseRunAs("1234", PASSWD), { uid: 1234, gid: 1234, name: "1234" });
  assert.deepEqual(parseRunAs("65534", ""), { uid: 65534, gid: 65534, name: "65534" });
  assert.throws(() => parseRunAs("wireguard", PASSWD), /--user wireguard: no such user in \/etc\/passwd/);
  assert.throws(() => parseRunAs("4294967295", PASSWD), /not a uid/);
});
