/**
 * The client side of the cross-platform UAPI (https://www.wireguard.com/xplatform/): what `wg` does to talk to
 * a userspace implementation (typetun, wireguard-go, boringtun) over `/var/run/wireguard/IFNAME.sock`. It only
 * moves text; lib/uapi.ts turns it into values.
 *
 * Errors are {@link InterfaceError}s carrying an errno, whose message is the C library's text for it, so the
 * commands print what wg prints: `Unable to access interface: No such device`.
 * @module
 */
import { lstatSync, opendirSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { constants as osConstants } from "node:os";
import {
  type DeviceInfo,
  type DeviceUpdate,
  formatSet,
  parseGet,
  UapiReader,
  type UapiRequest,
} from "../lib/uapi.ts";

/** Where UAPI sockets live (wireguard-tools ipc-uapi-unix.h, SOCK_PATH; wireguard-go ipc/uapi_linux.go). */
export const SOCKET_DIR = "/var/run/wireguard";
const SOCKET_SUFFIX = ".sock";
/** How long a request may take before the daemon is considered hung (wg itself waits forever). */
const DEFAULT_TIMEOUT_MS = 15_000;

// Linux errno numbers and glibc's strerror() texts for the ones this client can meet.
export const ENOENT = 2, EIO = 5, EACCES = 13, ENODEV = 19, EINVAL = 22, EPROTO = 71, ETIMEDOUT = 110;
const STRERROR: Record<number, string> = {
  1: "Operation not permitted",
  2: "No such file or directory",
  5: "Input/output error",
  9: "Bad file descriptor",
  12: "Cannot allocate memory",
  13: "Permission denied",
  19: "No such device",
  20: "Not a directory",
  21: "Is a directory",
  22: "Invalid argument",
  55: "No anode",
  71: "Protocol error",
  93: "Protocol not supported",
  98: "Address already in use",
  99: "Cannot assign requested address",
  101: "Network is unreachable",
  110: "Connection timed out",
  111: "Connection refused",
};

/** The strerror() text of a Node.js-style error (`code: "ENOENT"`), e.g. for wg's `fopen: ...` messages. */
export function systemErrorText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code ?? "";
  const errno = (osConstants.errno as Record<string, number>)[code];
  return errno !== undefined && STRERROR[errno] ? STRERROR[errno] : (e as Error).message;
}

/** glibc's strerror() text for a (positive) errno. */
export function strerror(errno: number): string {
  return STRERROR[errno] ?? `Unknown error ${errno}`;
}

/** A failed exchange with an interface: `errno` is positive (Linux numbering), `message` its strerror text. */
export class InterfaceError extends Error {
  override name = "InterfaceError";
  constructor(readonly ifname: string, readonly errno: number, detail?: string) {
    super(detail ?? strerror(errno));
  }
}

export function socketPath(ifname: string): string {
  return `${SOCKET_DIR}/${ifname}${SOCKET_SUFFIX}`;
}

const NODE_ERRNO: Record<string, number> = { ENOENT, EACCES, EPERM: 1, ECONNRESET: EIO, EPIPE: EIO };

/**
 * Sends one request (`get=1\n\n`, or `set=1\n` ... `\n`) and returns the reply up to and including the blank
 * line that ends it. A missing socket, or one nobody listens on any more, is ENODEV, what wg reports for an
 * interface that does not exist; like wg (ipc-uapi-unix.h), a socket refusing connections is a leftover of a
 * dead daemon and is removed. `path` is where the socket is when not in SOCKET_DIR (a lab node's own directory).
 */
export function uapiRequest(
  ifname: string,
  request: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
  path = socketPath(ifname),
): Promise<string> {
  // wg refuses a name with a slash (it would name another path) with EINVAL.
  if (ifname === "" || ifname.includes("/")) return Promise.reject(new InterfaceError(ifname, EINVAL));
  const local = path === socketPath(ifname) ? inProcess.get(ifname) : undefined;
  if (local) return Promise.resolve(answerLocally(local, request));
  try {
    if (!lstatSync(path).isSocket()) return Promise.reject(new InterfaceError(ifname, ENODEV));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const errno = code === "ENOENT" || code === "ENOTDIR" ? ENODEV : NODE_ERRNO[code ?? ""] ?? EIO;
    return Promise.reject(new InterfaceError(ifname, errno));
  }
  return new Promise((resolve, reject) => {
    let reply = "";
    let settled = false;
    const sock = connect(path);
    const finish = (err: InterfaceError | null) => {
      if (settled) return;
      settled = true;
      sock.destroy();
      if (err) reject(err);
      else resolve(reply);
    };
    sock.setEncoding("utf8");
    sock.setTimeout(timeoutMs, () => finish(new InterfaceError(ifname, ETIMEDOUT)));
    sock.on("connect", () => sock.write(request));
    sock.on("data", (chunk: string) => {
      reply += chunk;
      // The reply ends at its first empty line.
      const end = reply.startsWith("\n") ? 0 : reply.indexOf("\n\n");
      if (end >= 0) {
        reply = reply.slice(0, end + (end === 0 ? 1 : 2));
        finish(null);
      }
    });
    sock.on("end", () => finish(null)); // cut short: the caller's parser reports EPROTO
    sock.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ECONNREFUSED") {
        try {
          unlinkSync(path);
        } catch {
          // Someone else removed it already.
        }
        finish(new InterfaceError(ifname, ENODEV));
      } else {
        finish(new InterfaceError(ifname, NODE_ERRNO[e.code ?? ""] ?? EIO));
      }
    });
  });
}

/** A UAPI handler served by this very process (`up -f` runs its daemon in-process), by interface name. */
const inProcess = new Map<string, (req: UapiRequest) => string>();

/**
 * Lets this process's requests for `ifname` reach its own daemon without the socket: after `up -f --user` drops
 * root, the root-owned socket would refuse them (and a container without CAP_CHOWN cannot hand it over), yet
 * SIGHUP's reload and SaveConfig still need the daemon. Returns the function that withdraws it.
 */
export function serveInProcess(ifname: string, handle: (req: UapiRequest) => string): () => void {
  inProcess.set(ifname, handle);
  return () => {
    if (inProcess.get(ifname) === handle) inProcess.delete(ifname);
  };
}

/** Frames `request` as the server does and answers it with `handle`, reply after reply. */
function answerLocally(handle: (req: UapiRequest) => string, request: string): string {
  const reader = new UapiReader();
  let reply = "";
  for (const req of [...reader.push(request), ...reader.end()]) {
    reply += handle(req);
    if (req.op === "error") break;
  }
  return reply;
}

/** The interface's configuration and statistics (a UAPI get). Throws InterfaceError. */
export async function uapiGet(ifname: string, path = socketPath(ifname)): Promise<DeviceInfo> {
  const r = parseGet(await uapiRequest(ifname, "get=1\n\n", DEFAULT_TIMEOUT_MS, path));
  if (!r.ok) throw new InterfaceError(ifname, r.errno);
  return r.value;
}

/**
 * Applies an update (a UAPI set). Throws InterfaceError with the errno the daemon replied, e.g. EADDRINUSE
 * for a taken listen port, or EPROTO when the reply has no errno line.
 */
export async function uapiSet(
  ifname: string,
  update: DeviceUpdate,
  path = socketPath(ifname),
): Promise<void> {
  // Endpoint names (typetun's endpoint_name=) go in a request of their own, after the endpoints: a daemon that
  // does not know the key (wireguard-go, boringtun) refuses only that one, and has applied the rest.
  const named = update.peers.filter((p) => p.endpointName !== undefined && !p.remove);
  if (named.length > 0) update = { ...update, peers: update.peers.map(({ endpointName: _, ...p }) => p) };
  const reply = await uapiRequest(ifname, `set=1\n${formatSet(update)}\n`, DEFAULT_TIMEOUT_MS, path);
  // wg reads `errno=N` and takes -N as the error (ipc-uapi.h); daemons write it negated, or 0.
  const m = /^errno=(-?[0-9]{1,10})$/m.exec(reply);
  if (!m) throw new InterfaceError(ifname, EPROTO);
  const errno = Math.abs(Number(m[1]));
  if (errno !== 0) throw new InterfaceError(ifname, errno);
  if (named.length === 0) return;
  const names: DeviceUpdate = {
    replacePeers: false,
    peers: named.map((p) => ({
      publicKey: p.publicKey,
      remove: false,
      updateOnly: true, // a peer removed meanwhile is not created again
      replaceAllowedIps: false,
      allowedIps: [],
      endpointName: p.endpointName,
    })),
  };
  await uapiRequest(ifname, `set=1\n${formatSet(names)}\n`, DEFAULT_TIMEOUT_MS, path).catch(() => "");
}

/**
 * The userspace interfaces: the sockets in /var/run/wireguard that accept a connection, in directory order, as
 * wg lists them (ipc-uapi-unix.h, userspace_get_wireguard_interfaces; leftover sockets are removed there too).
 * Kernel WireGuard interfaces are not listed: they speak netlink, not this protocol.
 */
export async function listInterfaces(): Promise<string[]> {
  // opendir rather than readdir: Deno's readdirSync sorts the names, and wg keeps the directory's order.
  const names: string[] = [];
  let dir;
  try {
    dir = opendirSync(SOCKET_DIR);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
  try {
    for (let ent = dir.readSync(); ent !== null; ent = dir.readSync()) names.push(ent.name);
  } finally {
    dir.closeSync();
  }
  const candidates = names.filter((n) => n.length > SOCKET_SUFFIX.length && n.endsWith(SOCKET_SUFFIX))
    .map((n) => n.slice(0, -SOCKET_SUFFIX.length));
  const alive = await Promise.all(candidates.map(probe));
  return candidates.filter((_, i) => alive[i]);
}

/** Whether a socket accepts connections; one that refuses them is removed, as wg does. */
function probe(ifname: string): Promise<boolean> {
  const path = socketPath(ifname);
  try {
    if (!lstatSync(path).isSocket()) return Promise.resolve(false);
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const sock = connect(path);
    sock.on("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      sock.destroy();
      if (e.code === "ECONNREFUSED") {
        try {
          unlinkSync(path);
        } catch {
          // Already gone.
        }
        resolve(false);
      } else {
        resolve(true); // e.g. EACCES: it exists, and the get will say why it cannot be read
      }
    });
  });
}
