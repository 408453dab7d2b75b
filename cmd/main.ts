/**
 * Subcommand dispatch: `typetun COMMAND ...`.
 * @module
 */
import process from "node:process";
import pkg from "../package.json" with { type: "json" };
import { runtimeName } from "../ffi/runtime.ts";
import { aeadBackendName } from "./crypto.ts";
import { genkey, genpsk, pubkey } from "./keys.ts";

const USAGE = `Usage: typetun <cmd> [<args>]
       typetun [-f/--foreground] INTERFACE-NAME   (the daemon, as wireguard-go)
       typetun                                    (as typetun show)

Available subcommands:
  up        Brings a tunnel up from a wg-quick config file (as wg-quick up)
  down      Takes a tunnel brought up from a config file down again (as wg-quick down)
  show      Shows the current configuration and device information
  showconf  Shows the current configuration of a given WireGuard interface, for use with \`setconf'
  set       Change the current configuration, add peers, remove peers, or change peers
  setconf   Applies a configuration file to a WireGuard interface
  addconf   Appends a configuration file to a WireGuard interface
  syncconf  Synchronizes a configuration file to a WireGuard interface
  save      Writes the running configuration back to its config file (as wg-quick save)
  strip     Prints a config file without wg-quick's keys, for syncconf (as wg-quick strip)
  convert   Converts a configuration file between the .conf and TOML formats
  health    Exits 0 if the daemon answers and every peer with an endpoint has a recent handshake
  capture   Streams the tunnel's packets as pcapng to a file or stdout (typetun capture wg0 | tcpdump -r -)
  genkey    Generates a new private key and writes it to stdout
  genpsk    Generates a new preshared key and writes it to stdout
  pubkey    Reads a private key from stdin and writes a public key to stdout
  demo      Shows a tunnel at work
  lab       Builds, checks and removes a whole WireGuard topology in namespaces from one file
  version   Shows the version, the runtime and the transport AEAD in use
  help      Shows this help

You may pass \`--help' to any of these subcommands to view usage.
`;

// Each subcommand's module is loaded when it runs: the daemon, up/down and the demo pull in netlink, the UAPI
// server and the data plane, which `genkey` or `show` have no use for (about 16 ms per command under deno run).
export async function main(argv: string[]): Promise<number> {
  const [command] = argv;
  const rest = argv.slice(1);
  switch (command) {
    case "up":
      return (await import("./up.ts")).upMain(rest);
    case "down":
      return (await import("./down.ts")).downMain(rest);
    case "show":
      return (await import("./show.ts")).showMain(rest);
    case "showconf":
      return (await import("./show.ts")).showconfMain(rest);
    case "set":
      return (await import("./set.ts")).setMain(rest);
    case "setconf":
    case "addconf":
    case "syncconf":
      return (await import("./set.ts")).setconfMain(command, rest);
    case "save":
      return (await import("./save.ts")).saveMain(rest);
    case "strip":
      return (await import("./save.ts")).stripMain(rest);
    case "convert":
      return (await import("./convert.ts")).convertMain(rest);
    case "health":
      return (await import("./health.ts")).healthMain(rest);
    case "capture":
      return (await import("./capture.ts")).captureMain(rest);
    case "genkey":
      return genkey();
    case "genpsk":
      return genpsk();
    case "pubkey":
      return await pubkey();
    case "demo":
      return (await import("./demo.ts")).demoMain();
    case "lab":
      return (await import("./lab.ts")).labMain(rest);
    case "version":
    case "--version":
      process.stdout.write(
        `typetun v${pkg.version} (${runtimeName} ${process.versions[runtimeName] ?? ""}, ` +
          `transport AEAD: ${aeadBackendName()})\n`,
      );
      return 0;
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return 0;
    case undefined:
      // As wg: no arguments is `show` (every interface; nothing when there are none).
      return (await import("./show.ts")).showMain([]);
    default:
      // Anything else is wireguard-go's calling convention: `typetun [-f] IFNAME`.
      return (await import("./daemon.ts")).daemonMain(argv);
  }
}
