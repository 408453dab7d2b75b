/**
 * Subcommand dispatch: `typetun COMMAND ...`.
 * @module
 */
import process from "node:process";
import { daemonMain } from "./daemon.ts";
import { inProcessDemo } from "./demo.ts";
import { genkey, genpsk, pubkey } from "./keys.ts";

const USAGE = `Usage: typetun <cmd> [<args>]
       typetun [-f/--foreground] INTERFACE-NAME   (the daemon, as wireguard-go)

Available subcommands:
  genkey    Generates a new private key and writes it to stdout
  genpsk    Generates a new preshared key and writes it to stdout
  pubkey    Reads a private key from stdin and writes a public key to stdout
  demo      Shows a tunnel at work
  help      Shows this help
`;

export async function main(argv: string[]): Promise<number> {
  const [command] = argv;
  switch (command) {
    case "genkey":
      return genkey();
    case "genpsk":
      return genpsk();
    case "pubkey":
      return await pubkey();
    case "demo":
      return inProcessDemo();
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return 0;
    case undefined:
      process.stderr.write(USAGE);
      return 1;
    default:
      // Anything else is wireguard-go's calling convention: `typetun [-f] IFNAME`.
      return await daemonMain(argv);
  }
}
