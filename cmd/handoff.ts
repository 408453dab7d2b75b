/**
 * wireguard-go's conventions with whoever starts the daemon (wireguard-go main.go, ipc/uapi_linux.go):
 * - `WG_TUN_FD=N`: descriptor N is a TUN device that is already attached (a supervisor, or wireguard-go's
 *   own parent, opened it); the interface is not opened by name.
 * - `WG_UAPI_FD=N`: descriptor N is the UAPI socket, bound and listening; the daemon serves it instead of
 *   binding /var/run/wireguard/IFNAME.sock itself, and leaves the file to its owner at exit.
 * - the daemon exits when its UAPI socket file is deleted: `rm /var/run/wireguard/wg0.sock` stops it, as
 *   `ip link del wg0` does.
 * @module
 */
import { lstatSync, watch } from "node:fs";
import { basename, dirname } from "node:path";
import process from "node:process";

/**
 * The descriptor named by an environment variable (`WG_TUN_FD`, `WG_UAPI_FD`), or null when it is not set.
 * @throws Error when the value is not a descriptor number
 */
export function handedFd(name: string, env: Record<string, string | undefined> = process.env): number | null {
  const v = env[name];
  if (v === undefined || v === "") return null;
  if (!/^[0-9]{1,9}$/.test(v)) throw new Error(`${name} must be a file descriptor number, not "${v}"`);
  return Number(v);
}

/**
 * The `stdio` of a child that must see the handed descriptors at the same numbers (the daemon started in the
 * background passes them on): entries 0-2 as given, then each handed descriptor at its own index.
 * @throws Error for a handed descriptor below 3, which the child's standard streams occupy
 */
export function stdioPassing(
  std: ("ignore" | "pipe" | "inherit")[],
  env: Record<string, string | undefined> = process.env,
): ("ignore" | "pipe" | "inherit" | number)[] {
  const stdio: ("ignore" | "pipe" | "inherit" | number)[] = [...std];
  for (const name of ["WG_TUN_FD", "WG_UAPI_FD"]) {
    const fd = handedFd(name, env);
    if (fd === null) continue;
    if (fd < 3) throw new Error(`${name}=${fd}: a descriptor from 3 on is needed to start in the background`);
    while (stdio.length <= fd) stdio.push("ignore");
    stdio[fd] = fd;
  }
  return stdio;
}

/**
 * Calls `gone` once when the socket file at `path` is deleted or replaced by another file (a new daemon's).
 *
 * wireguard-go puts an inotify watch on the socket file itself (IN_ATTRIB | IN_DELETE | IN_DELETE_SELF; an
 * unlink changes the link count, which is IN_ATTRIB) and calls lstat after each event. This watches the
 * directory instead (fs.watch: inotify underneath in Deno and in Bun, the same in both runtimes), whose
 * IN_DELETE comes for any unlink of an entry, and compares the inode after each event: nothing is polled, an
 * idle daemon does nothing, and other files changing in the directory cost one lstat each. Checked once at
 * once, too, so a deletion before the watch started is not missed.
 * @returns a function that stops watching
 */
export function watchSocketFile(path: string, gone: (why: string) => void): () => void {
  let ino: number | bigint;
  try {
    ino = lstatSync(path).ino;
  } catch {
    gone(`the UAPI socket ${path} does not exist`);
    return () => {};
  }
  let done = false;
  const check = () => {
    if (done) return;
    let now: number | bigint | null = null;
    try {
      now = lstatSync(path).ino;
    } catch {
      // Deleted.
    }
    if (now === ino) return;
    stop();
    gone(now === null ? `the UAPI socket ${path} was deleted` : `the UAPI socket ${path} was replaced`);
  };
  const name = basename(path);
  const watcher = watch(dirname(path), { persistent: false }, (_event, file) => {
    // Some events come without a name (an overflowed queue): check then too.
    if (file === null || file === undefined || String(file) === name) check();
  });
  // The directory itself deleted or unreadable: the socket is gone with it.
  watcher.on("error", () => check());
  const stop = () => {
    done = true;
    watcher.close();
  };
  check();
  return stop;
}
