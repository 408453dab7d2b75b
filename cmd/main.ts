/**
 * Subcommand dispatch: `typetun COMMAND ...`.
 * @module
 */
import process from "node:process";
import { inProcessDemo } from "./demo.ts";
import { genkey, genpsk, pubkey } from "./keys.ts";

const USAGE = `Usage: typetun <cmd> [<args>]

Available subcommands:
  genkey    Generates a new private key and writes it to stdout
  genpsk    Generates a new preshared key and writes it to stdout
  pubkey    Reads a private key from stdin and writes a public key to stdout
  demo      Shows a tunnel at work
  help      Shows this help
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
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
    default:
      process.stderr.write(`Invalid subcommand: '${command ?? ""}'\n${USAGE}`);
      void rest;
      return 1;
  }
}
