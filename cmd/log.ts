/**
 * Logging as wireguard-go does it: LOG_LEVEL = error | info | debug (also `verbose` = debug, `silent`),
 * lines on stderr prefixed with the level and the interface. Keys are never passed to the logger.
 * @module
 */
import process from "node:process";

export enum Level {
  Silent,
  Error,
  Info,
  Debug,
}

export function levelFromEnv(value: string | undefined): Level {
  switch ((value ?? "").toLowerCase()) {
    case "silent":
      return Level.Silent;
    case "error":
      return Level.Error;
    case "debug":
    case "verbose":
      return Level.Debug;
    default:
      return Level.Info;
  }
}

export class Logger {
  constructor(public level: Level, readonly prefix: string) {}

  #write(tag: string, msg: string): void {
    const t = new Date().toISOString().replace("T", " ").slice(0, 19);
    process.stderr.write(`${tag}: (${this.prefix}) ${t} ${msg}\n`);
  }

  error(msg: string): void {
    if (this.level >= Level.Error) this.#write("ERROR", msg);
  }

  info(msg: string): void {
    if (this.level >= Level.Info) this.#write("INFO", msg);
  }

  debug(msg: string): void {
    if (this.level >= Level.Debug) this.#write("DEBUG", msg);
  }
}
