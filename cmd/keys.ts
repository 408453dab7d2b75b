/**
 * `genkey`, `pubkey`, `genpsk`: the same input and output as `wg`, byte for byte.
 * @module
 */
import { fstatSync } from "node:fs";
import process from "node:process";
import { clampPrivateKey, dhPublic } from "../lib/crypto.ts";
import { keyFromBase64, keyToBase64 } from "../lib/encoding.ts";

/** The system CSPRNG (Web Crypto, present in Deno, Bun and Node). */
export function systemRng(out: Uint8Array): void {
  // getRandomValues fills at most 65,536 bytes per call; the common small request needs no subarray.
  if (out.length <= 65536) crypto.getRandomValues(out);
  else for (let i = 0; i < out.length; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
}

function warnIfWorldReadable(): void {
  // As `wg genkey`: a key written into a regular file that others can read deserves a warning.
  try {
    const st = fstatSync(1);
    if (st.isFile() && (st.mode & 0o007) !== 0) {
      process.stderr.write(
        "Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n",
      );
    }
  } catch {
    // stdout is not something we can stat: nothing to warn about.
  }
}

export function genkey(): number {
  warnIfWorldReadable();
  const k = new Uint8Array(32);
  systemRng(k);
  process.stdout.write(keyToBase64(clampPrivateKey(k)) + "\n");
  return 0;
}

export function genpsk(): number {
  warnIfWorldReadable();
  const k = new Uint8Array(32);
  systemRng(k);
  process.stdout.write(keyToBase64(k) + "\n");
  return 0;
}

/** Reads a base64 private key on stdin (surrounding whitespace allowed, as `wg pubkey`) and prints its public key. */
export async function pubkey(): Promise<number> {
  let input = "";
  for await (const chunk of process.stdin) input += chunk.toString();
  const key = keyFromBase64(input.trim());
  if (!key) {
    process.stderr.write("pubkey: Key is not the correct length or format\n");
    return 1;
  }
  process.stdout.write(keyToBase64(dhPublic(clampPrivateKey(key))) + "\n");
  return 0;
}
