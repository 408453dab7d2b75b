/**
 * `--user NAME|UID` (on `up -f` and on the daemon): once everything that needs root is done (the TUN, the
 * UDP sockets, the UAPI socket, routes and rules), the process becomes that user and keeps only
 * CAP_NET_ADMIN, which still covers what it does from then on: setting SO_MARK (a fwmark change) and
 * binding a new UDP socket (a ListenPort change; a port below 1024 would also need CAP_NET_BIND_SERVICE,
 * and the error says so). The UAPI socket stays root's, as wireguard-go's (`up -f` reaches its in-process
 * daemon without it: cmd/uapi_client.ts serveInProcess).
 * @module
 */
import { readFileSync } from "node:fs";
import { CAP_NET_ADMIN, dropPrivileges } from "../ffi/privilege.ts";

/** A user to become: from /etc/passwd by name, or a number (its passwd group, else the same number). */
export interface RunAs {
  uid: number;
  gid: number;
  /** The name as given, for messages. */
  name: string;
}

/**
 * Finds `spec` in the passwd text: a name, or a decimal uid. A uid /etc/passwd does not list is still a
 * uid (containers often run as one); its group is the same number. Throws for an unknown name.
 */
export function parseRunAs(spec: string, passwd: string): RunAs {
  const entries = passwd.split("\n").map((l) => l.split(":")).filter((f) => f.length >= 4);
  if (/^[0-9]+$/.test(spec)) {
    const uid = Number(spec);
    if (uid > 0xfffffffe) throw new Error(`--user ${spec}: not a uid`);
    const e = entries.find((f) => f[2] === String(uid));
    return { uid, gid: e ? Number(e[3]) : uid, name: spec };
  }
  const e = entries.find((f) => f[0] === spec);
  if (!e || !/^[0-9]+$/.test(e[2]!) || !/^[0-9]+$/.test(e[3]!)) {
    throw new Error(`--user ${spec}: no such user in /etc/passwd (give a name from it or a numeric uid)`);
  }
  return { uid: Number(e[2]), gid: Number(e[3]), name: spec };
}

/** Reads /etc/passwd (absent in a bare image: then only numeric uids work). */
export function lookupUser(spec: string): RunAs {
  let passwd = "";
  try {
    passwd = readFileSync("/etc/passwd", "utf8");
  } catch {
    // No passwd file: a number still works.
  }
  return parseRunAs(spec, passwd);
}

/**
 * Becomes `who`, keeping CAP_NET_ADMIN only (ffi/privilege.ts). Throws if that is not possible. `children`
 * passes it on to the programs started from then on (`up -f`'s take-down runs PreDown/PostDown hooks and
 * removes its firewall rules with nft or iptables); the daemon alone starts none.
 */
export function becomeUser(who: RunAs, children = false): void {
  dropPrivileges(who.uid, who.gid, [CAP_NET_ADMIN], children);
}
