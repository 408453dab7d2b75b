/**
 * Keys kept in files (`PrivateKeyFile =`, `PresharedKeyFile =`, and the `_FILE` variables of
 * cmd/env_config.ts): reading them for lib/config.ts's resolveKeyFiles, with wg-quick's warning about a file
 * others can read.
 * @module
 */
import { readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { resolveKeyFiles, type WgConfig } from "../lib/config.ts";
import { say } from "./log.ts";

/**
 * wg-quick's test (linux.bash, cmd_up): the file, symbolic links followed, is world accessible when both it
 * and its directory grant others any permission (`mode & dir mode & 0007`): a world-readable file in a
 * directory others cannot enter is not.
 */
export function worldAccessible(path: string): boolean {
  const real = realpathSync(path);
  return (statSync(real).mode & statSync(dirname(real)).mode & 0o007) !== 0;
}

/** Reads one key file's text; a relative path is taken from `base`'s directory. Warns as wg-quick does. */
export function readKeyFile(path: string, base: string, warn: Warn = defaultWarn): string {
  const full = path.startsWith("/") ? path : resolve(dirname(base), path);
  let text: string;
  try {
    text = readFileSync(full, "utf8");
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "ENOENT"
      ? "no such file"
      : err.code === "EACCES"
      ? "permission denied"
      : err.code === "EISDIR"
      ? "is a directory"
      : err.message;
    throw new Error(why);
  }
  if (worldAccessible(full)) warn(`Warning: \`${full}' is world accessible`);
  return text;
}

type Warn = (line: string) => void;
const defaultWarn: Warn = (line) => say("warn", line);

/** The configuration read from `file` with the keys of its key files filled in (a ConfigError otherwise). */
export function readKeyFiles(cfg: WgConfig, file: string, warn: Warn = defaultWarn): WgConfig {
  return resolveKeyFiles(cfg, file, (path) => readKeyFile(path, file, warn));
}
