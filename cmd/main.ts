/**
 * Subcommand dispatch: `typetun COMMAND ...`.
 * @module
 */
import process from "node:process";

export function main(argv: string[]): Promise<number> {
  const [command] = argv;
  process.stderr.write(`typetun: unknown command ${command ?? "(none)"}\n`);
  return Promise.resolve(1);
}
