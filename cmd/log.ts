/**
 * Logging as wireguard-go does it: LOG_LEVEL = error | info | debug (also `verbose` = debug, `silent`),
 * lines on stderr prefixed with the level and the interface. Keys are never passed to the logger.
 *
 * `LOG_FORMAT=json` writes one JSON object per line instead (`time` in RFC 3339 UTC, `level`, `interface`,
 * `message`), for the log collectors containers are run with.
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

export type LogFormat = "text" | "json";

/** LOG_FORMAT: `json`, else text (wireguard-go's lines). */
export function formatFromEnv(value = process.env.LOG_FORMAT): LogFormat {
  return value?.toLowerCase() === "json" ? "json" : "text";
}

/** One JSON log line: what LOG_FORMAT=json writes for every message. */
export function jsonLine(level: string, iface: string | null, message: string, now = new Date()): string {
  return `${JSON.stringify({ time: now.toISOString(), level, interface: iface, message })}\n`;
}

let sayInterface: string | null = null;

/** The interface that {@link say}'s JSON lines name (`up` sets it once it knows it). */
export function setLogInterface(name: string | null): void {
  sayInterface = name;
}

/**
 * A line for whoever runs `up`/`down` (wg-quick's `[#]` steps, warnings, errors), on stderr: as it is, or
 * under LOG_FORMAT=json as one JSON object of the given level.
 */
export function say(level: "info" | "warn" | "error", line: string): void {
  process.stderr.write(formatFromEnv() === "json" ? jsonLine(level, sayInterface, line) : `${line}\n`);
}

export class Logger {
  constructor(public level: Level, readonly prefix: string, readonly format: LogFormat = formatFromEnv()) {}

  #write(tag: string, msg: string): void {
    if (this.format === "json") {
      process.stderr.write(jsonLine(tag.toLowerCase(), this.prefix, msg));
      return;
    }
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
