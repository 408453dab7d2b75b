/**
 * The runtime adapter: the one file in typetun that touches `Deno.*` or `Bun.*`.
 *
 * It opens a shared library with a symbol table written in a small common vocabulary, hands back plain
 * functions, passes typed arrays as pointers, gives the address of a buffer (for structures such as `iovec`
 * that hold pointers) and reads the calling thread's `errno`.
 *
 * Types of the vocabulary and what JavaScript sees:
 * - `i32`, `u32`: number in, number out.
 * - `i64`, `u64`, `isize`, `usize`: number or bigint in, number out (via a wrapper; not for the hot path).
 * - `buffer`: a typed array in (its bytes are passed by address, never copied).
 * - `pointer`: an address as bigint in (`0n` for NULL), bigint out.
 * - `void`: undefined out.
 *
 * Hot-path symbols (read, write, recvmmsg, sendmmsg, poll) are declared with `i32` results even where C
 * says `ssize_t`: on x86-64 and AArch64 the result comes back in a 64-bit register and its low 32 bits are
 * exactly the value for everything from -1 to 2^31-1, while both runtimes return a 64-bit result as a freshly
 * allocated bigint.
 *
 * Non-blocking calls: a symbol marked `nonblocking: true` is run by Deno on a separate thread and returns a
 * promise, so the JavaScript event loop keeps running while, say, `poll` sleeps. bun:ffi has no equivalent
 * (checked on Bun 1.4.5), so there `nonblockingCalls` is false and such symbols are bound synchronously;
 * callers (ffi/poll.ts) fall back to short polls between timer turns. A call on another thread cannot report
 * `errno` (it is thread-local), so a nonblocking call that fails must be repeated synchronously to learn why.
 * @module
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A C type in the common signature vocabulary. */
export type FfiType = "i32" | "u32" | "i64" | "u64" | "isize" | "usize" | "buffer" | "pointer" | "void";

/** One symbol: its argument and result types; `name` when the C name differs from the key. */
export interface SymbolSpec {
  readonly name?: string;
  readonly args: readonly FfiType[];
  readonly result: FfiType;
  readonly nonblocking?: boolean;
}

/** The bytes a `buffer` argument accepts. */
export type BufferArg = Uint8Array | Int32Array | Uint32Array | BigUint64Array | Int16Array | Uint16Array;

type ArgOf<T extends FfiType> = T extends "i32" | "u32" ? number
  : T extends "i64" | "u64" | "isize" | "usize" ? number | bigint
  : T extends "buffer" ? BufferArg
  : T extends "pointer" ? bigint
  : never;

type ResultOf<T extends FfiType> = T extends "void" ? undefined : T extends "pointer" ? bigint : number;

type ArgsOf<A extends readonly FfiType[]> = { -readonly [I in keyof A]: ArgOf<A[I]> };

/** The JavaScript function bound to a symbol. */
export type BoundFn<S extends SymbolSpec> = S["nonblocking"] extends true
  ? (...args: ArgsOf<S["args"]>) => Promise<ResultOf<S["result"]>> | ResultOf<S["result"]>
  : (...args: ArgsOf<S["args"]>) => ResultOf<S["result"]>;

/** An open shared library. */
export interface Library<T extends Record<string, SymbolSpec>> {
  readonly symbols: { readonly [K in keyof T]: BoundFn<T[K]> };
  close(): void;
}

// The runtime globals, declared here so that the rest of the code base needs neither Deno's nor Bun's types.
// deno-lint-ignore no-explicit-any
type Any = any;
const g = globalThis as Any;
const DenoNs: Any = typeof g.Deno !== "undefined" ? g.Deno : undefined;
const BunNs: Any = typeof g.Bun !== "undefined" ? g.Bun : undefined;

/** Which runtime this is. */
export const runtimeName: "deno" | "bun" = DenoNs !== undefined ? "deno" : "bun";

if (DenoNs === undefined && BunNs === undefined) {
  throw new Error("Unsupported runtime: typetun runs on Deno or Bun (FFI is needed)");
}

// bun:ffi is only importable under Bun; the specifier is kept out of static analysis so Deno never resolves it.
// It is loaded with Bun's synchronous `require`, not a top-level `await import()`: `bun build --compile
// --bytecode` (scripts/compile.ts) refuses a bundle with a top-level await, and bytecode halves the daemon's
// start (start → UAPI 54 → 29 ms, issue 13). Deno never takes this branch.
const bunFfiSpecifier = "bun:ffi";
const bunFfi: Any = BunNs !== undefined && DenoNs === undefined ? require(bunFfiSpecifier) : undefined;

/** True when symbols marked `nonblocking` really run off the JavaScript thread (Deno), false on Bun. */
export const nonblockingCalls: boolean = runtimeName === "deno";

/** The path of the C library. */
export const LIBC = "libc.so.6";

const is64 = (t: FfiType) => t === "i64" || t === "u64" || t === "isize" || t === "usize";

function denoType(t: FfiType): string {
  return t; // Deno's names are a superset of the vocabulary.
}

function bunType(t: FfiType, isResult: boolean): string {
  switch (t) {
    case "buffer":
    case "pointer":
      return "ptr";
    case "i64":
    case "isize":
      return isResult ? "i64_fast" : "i64";
    case "u64":
    case "usize":
      return isResult ? "u64_fast" : "u64";
    default:
      return t;
  }
}

/** Wraps a raw function only when some argument or the result needs converting. */
function adapt(raw: Any, spec: SymbolSpec, toPtr: (a: bigint) => Any, fromPtr: (p: Any) => bigint): Any {
  const ptrArgs = spec.args.map((t, i) => (t === "pointer" ? i : -1)).filter((i) => i >= 0);
  const convertResult = spec.result === "pointer" ? fromPtr : is64(spec.result) ? Number : undefined;
  if (ptrArgs.length === 0 && convertResult === undefined) return raw;
  const post = (r: Any) => (convertResult === undefined ? r : convertResult(r));
  return (...args: Any[]) => {
    for (const i of ptrArgs) args[i] = toPtr(args[i] as bigint);
    const r = raw(...args);
    return r instanceof Promise ? r.then(post) : post(r);
  };
}

/**
 * Opens a shared library and binds the given symbols.
 * @param path the library, e.g. {@link LIBC}
 * @param symbols the symbol table
 * @returns the bound functions and a `close`
 * @example
 * ```ts
 * const libc = openLibrary(LIBC, { getpid: { args: [], result: "i32" } });
 * libc.symbols.getpid();
 * ```
 */
export function openLibrary<T extends Record<string, SymbolSpec>>(path: string, symbols: T): Library<T> {
  const bound: Record<string, unknown> = {};
  if (runtimeName === "deno") {
    const table: Record<string, unknown> = {};
    for (const [key, s] of Object.entries(symbols)) {
      table[key] = {
        ...(s.name !== undefined ? { name: s.name } : {}),
        parameters: s.args.map(denoType),
        result: denoType(s.result),
        ...(s.nonblocking ? { nonblocking: true } : {}),
      };
    }
    const lib = DenoNs.dlopen(path, table);
    const toPtr = (a: bigint) => (a === 0n ? null : DenoNs.UnsafePointer.create(a));
    const fromPtr = (p: Any) => (p === null ? 0n : BigInt(DenoNs.UnsafePointer.value(p)));
    for (const [key, s] of Object.entries(symbols)) bound[key] = adapt(lib.symbols[key], s, toPtr, fromPtr);
    return { symbols: bound as Library<T>["symbols"], close: () => lib.close() };
  }
  // bun:ffi binds by C name, so symbols sharing a C name (aliases with other signatures) go to separate
  // dlopen handles of the same library.
  const groups: Record<string, [string, SymbolSpec]>[] = [];
  for (const [key, s] of Object.entries(symbols)) {
    const cname = s.name ?? key;
    let group = groups.find((gr) => !(cname in gr));
    if (group === undefined) groups.push(group = {});
    group[cname] = [key, s];
  }
  const handles: Any[] = [];
  const toPtr = (a: bigint) => (a === 0n ? null : Number(a));
  const fromPtr = (p: Any) => (p === null || p === undefined ? 0n : BigInt(p));
  for (const group of groups) {
    const table: Record<string, unknown> = {};
    for (const [cname, [, s]] of Object.entries(group)) {
      table[cname] = { args: s.args.map((t) => bunType(t, false)), returns: bunType(s.result, true) };
    }
    const lib = bunFfi.dlopen(path, table);
    handles.push(lib);
    for (const [cname, [key, s]] of Object.entries(group)) {
      bound[key] = adapt(lib.symbols[cname], s, toPtr, fromPtr);
    }
  }
  return { symbols: bound as Library<T>["symbols"], close: () => handles.forEach((h) => h.close()) };
}

/** True when {@link compileC} can compile C here: Bun, whose bun:ffi embeds TinyCC. Deno has no compiler. */
export const canCompileC: boolean = runtimeName === "bun" && typeof bunFfi?.cc === "function";

/**
 * Compiles C source in memory (Bun's `cc`, TinyCC) and binds the given symbols, as {@link openLibrary} does for
 * a shared library. The source should declare what it calls instead of including headers (none need be
 * installed); functions of libraries already loaded in the process, and `dlopen`/`dlsym`, resolve.
 *
 * TinyCC reads its input from a file only, and a compiled executable has no real file of ours (its embedded
 * ones sit in a virtual file system TinyCC cannot read), so the source is written to a fresh directory only
 * this user can enter (mkdtemp, mode 0700: nobody can swap the file before it is compiled) and removed again.
 * @param source the C translation unit
 * @param symbols the functions to bind (`pointer` arguments and 64-bit results add a wrapper: avoid on hot paths)
 * @throws Error on Deno (no compiler), or with TinyCC's message when the source does not compile
 */
export function compileC<T extends Record<string, SymbolSpec>>(source: string, symbols: T): Library<T> {
  if (!canCompileC) throw new Error(`${runtimeName} has no C compiler (Bun's bun:ffi cc is needed)`);
  const dir = mkdtempSync(join(tmpdir(), "typetun-cc-"));
  try {
    const file = join(dir, "unit.c");
    writeFileSync(file, source, { mode: 0o600 });
    const table: Record<string, unknown> = {};
    for (const [key, s] of Object.entries(symbols)) {
      if (s.name !== undefined && s.name !== key) throw new Error(`compileC: ${key} cannot be renamed`);
      table[key] = { args: s.args.map((t) => bunType(t, false)), returns: bunType(s.result, true) };
    }
    const lib = bunFfi.cc({ source: file, symbols: table });
    const bound: Record<string, unknown> = {};
    const toPtr = (a: bigint) => (a === 0n ? null : Number(a));
    const fromPtr = (p: Any) => (p === null || p === undefined ? 0n : BigInt(p));
    for (const [key, s] of Object.entries(symbols)) {
      // Bound again through CFunction, as dlopen's symbols are: cc's own bindings cost about 0.07 µs more per
      // call (a 9-argument seal of ffi/aead_cc.ts: 0.90 against 0.83 µs on Bun 1.4.5).
      const fn = bunFfi.CFunction({ ptr: lib.symbols[key].ptr, ...(table[key] as object) });
      bound[key] = adapt(fn, s, toPtr, fromPtr);
    }
    return { symbols: bound as Library<T>["symbols"], close: () => lib.close() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A C function pointer that calls `fn(a, b)` (two `int`s, no result) on this thread's event loop, from any
 * thread (bun:ffi's threadsafe JSCallback), for C code of {@link compileC} that runs a thread of its own.
 * Bun only. It is never freed: C may hold it for the life of the process.
 * @returns its address, for a `usize` argument
 */
export function threadsafeCallback(fn: (a: number, b: number) => void): number {
  if (runtimeName !== "bun") throw new Error(`${runtimeName}: no threadsafe callbacks (Bun only)`);
  const cb = new bunFfi.JSCallback(fn, { args: ["i32", "i32"], returns: "void", threadsafe: true });
  return cb.ptr as number;
}

/**
 * The address of a buffer's first byte, to store in structures that hold pointers (iovec, msghdr).
 * The buffer must stay referenced for as long as the address is used; allocate it with {@link pinned} so the
 * engine never moves it.
 * @param buf the buffer
 * @returns its address
 */
export function addressOf(buf: ArrayBufferView): bigint {
  if (runtimeName === "deno") return BigInt(DenoNs.UnsafePointer.value(DenoNs.UnsafePointer.of(buf)));
  return BigInt(bunFfi.ptr(buf));
}

/**
 * A zeroed byte buffer with its own off-heap backing store. Small typed arrays may live inside the engine's
 * heap and move during garbage collection; a buffer whose address is stored in a C structure must not.
 * @param size length in bytes
 * @returns the buffer
 */
export function pinned(size: number): Uint8Array {
  const bytes = new Uint8Array(new ArrayBuffer(Math.max(size, 64)), 0, size);
  addressOf(bytes); // Materialises the backing store now, not on the hot path.
  return bytes;
}

// errno lives at a per-thread address given by glibc's __errno_location(); this module instance belongs to one
// thread (a Worker gets its own), so the address is looked up once.
const errnoLib = openLibrary(LIBC, { __errno_location: { args: [], result: "pointer" } });
const errnoAddress = errnoLib.symbols.__errno_location();
const errnoView: Any = runtimeName === "deno"
  ? new DenoNs.UnsafePointerView(DenoNs.UnsafePointer.create(errnoAddress))
  : undefined;
const errnoNumber = Number(errnoAddress);

/**
 * The calling thread's `errno`, as left by the last synchronous call that failed.
 * @returns the errno value
 */
export function errno(): number {
  return errnoView !== undefined ? errnoView.getInt32(0) : bunFfi.read.i32(errnoNumber, 0);
}
