/**
 * ChaCha20-Poly1305 (RFC 8439 section 2.8) from OpenSSL's libcrypto in one foreign call per message, through a
 * small C helper that Bun compiles at run time with its embedded TinyCC (`cc` of bun:ffi).
 *
 * Why: ffi/aead.ts drives EVP from JavaScript, four calls per message (set key and nonce, update, final, get
 * or set the tag), each paying the runtime's call overhead (about 40 ns on Bun here), plus the JavaScript
 * around them (views of the buffer, a tag copy). The helper below makes those EVP calls from C, writes and
 * reads the tag where the caller keeps it, and sets the key only when it differs from the previous message's
 * on the same direction (a stream of packets uses one key for minutes): measured with bench/core_bench.ts in
 * the commit that added it.
 *
 * Deno has no C compiler, so there ffi/aead.ts's four-call path stays; {@link openCompiledLibcrypto} throws
 * with the reason (no compiler, libcrypto missing, a compile error), which the caller logs and goes on.
 * The helper links against nothing: it finds libcrypto with dlopen/dlsym, so no development symlink
 * (libcrypto.so) nor headers need be installed, only the library ffi/aead.ts loads too.
 * @module
 */
import { type ChaCha20Poly1305, checkArgs, LIBCRYPTO } from "./aead.ts";
import { canCompileC, compileC } from "./runtime.ts";

/**
 * The helper. It declares the few OpenSSL and libdl functions it uses instead of including headers.
 * Return values: seal 0 on success; open 1 on a good tag, 0 on a wrong one (the data then restored); negative
 * numbers name the EVP step that failed.
 */
const SOURCE = String.raw`
/* typetun: ChaCha20-Poly1305 over OpenSSL's EVP in one call per message (ffi/aead_cc.ts). */
#define RTLD_NOW 2
#define EVP_CTRL_AEAD_GET_TAG 0x10
#define EVP_CTRL_AEAD_SET_TAG 0x11
#define TAG_LEN 16

extern void *dlopen(const char *file, int mode);
extern void *dlsym(void *handle, const char *name);
extern char *dlerror(void);
extern int dlclose(void *handle);

static void *lib;
static const void *(*cipher)(void);
static void *(*ctx_new)(void);
static void (*ctx_free)(void *ctx);
static int (*cipher_init)(void *ctx, const void *type, void *engine, const unsigned char *key,
                          const unsigned char *iv, int enc);
static int (*cipher_update)(void *ctx, unsigned char *out, int *outl, const unsigned char *in, int inl);
static int (*cipher_final)(void *ctx, unsigned char *out, int *outl);
static int (*ctx_ctrl)(void *ctx, int type, int arg, void *ptr);

/* One EVP context per direction, and the key it holds (so that an unchanged key is not set again), kept as
   four 64-bit words: TinyCC does not optimize, and a byte loop cost 0.05 us per message. */
struct direction {
  void *ctx;
  unsigned long key[4];
  int keyed;
};
static struct direction sealing, opening;
static unsigned char scratch[TAG_LEN];

static void message(char *out, int cap, const char *a, const char *b) {
  int i = 0;
  while (a && *a && i < cap - 1) out[i++] = *a++;
  while (b && *b && i < cap - 1) out[i++] = *b++;
  if (cap > 0) out[i] = 0;
}

void tt_unload(void) {
  if (sealing.ctx) ctx_free(sealing.ctx);
  if (opening.ctx) ctx_free(opening.ctx);
  sealing.ctx = opening.ctx = 0;
  sealing.keyed = opening.keyed = 0;
  if (lib) dlclose(lib);
  lib = 0;
}

static int bind(const char *name, void **fn, char *err, int cap) {
  *fn = dlsym(lib, name);
  if (!*fn) message(err, cap, "missing symbol ", name);
  return *fn != 0;
}

/* 0 when loaded, else -1 with the reason in err. */
int tt_load(const char *path, char *err, int cap) {
  lib = dlopen(path, RTLD_NOW);
  if (!lib) {
    message(err, cap, dlerror(), 0);
    return -1;
  }
  if (!bind("EVP_chacha20_poly1305", (void **)&cipher, err, cap) ||
      !bind("EVP_CIPHER_CTX_new", (void **)&ctx_new, err, cap) ||
      !bind("EVP_CIPHER_CTX_free", (void **)&ctx_free, err, cap) ||
      !bind("EVP_CipherInit_ex", (void **)&cipher_init, err, cap) ||
      !bind("EVP_CipherUpdate", (void **)&cipher_update, err, cap) ||
      !bind("EVP_CipherFinal_ex", (void **)&cipher_final, err, cap) ||
      !bind("EVP_CIPHER_CTX_ctrl", (void **)&ctx_ctrl, err, cap)) {
    tt_unload();
    return -1;
  }
  const void *type = cipher();
  sealing.ctx = ctx_new();
  opening.ctx = ctx_new();
  if (!type || !sealing.ctx || !opening.ctx ||
      cipher_init(sealing.ctx, type, 0, 0, 0, 1) != 1 || cipher_init(opening.ctx, type, 0, 0, 0, 0) != 1) {
    message(err, cap, "EVP_chacha20_poly1305 could not be set up", 0);
    tt_unload();
    return -1;
  }
  return 0;
}

/* Sets the nonce, and the key when it is not the one the context already holds. The comparison takes the same
   time whatever the keys (no early exit), so it says nothing of either. Keys are read as 64-bit words, which
   x86-64 and AArch64 load from any address. */
static int begin(struct direction *d, const unsigned char *key, const unsigned char *nonce, int enc,
                 const unsigned char *ad, int adlen) {
  const unsigned long *k = (const unsigned long *)key;
  unsigned long *held = d->key;
  int n;
  if (((held[0] ^ k[0]) | (held[1] ^ k[1]) | (held[2] ^ k[2]) | (held[3] ^ k[3])) != 0 || !d->keyed) {
    held[0] = k[0];
    held[1] = k[1];
    held[2] = k[2];
    held[3] = k[3];
    d->keyed = 0;
    if (cipher_init(d->ctx, 0, 0, key, nonce, enc) != 1) return 0;
    d->keyed = 1;
  } else if (cipher_init(d->ctx, 0, 0, 0, nonce, enc) != 1) {
    return 0;
  }
  /* With a NULL output, an update takes its input as additional authenticated data. */
  return adlen == 0 || cipher_update(d->ctx, 0, &n, ad, adlen) == 1;
}

int tt_seal(const unsigned char *key, const unsigned char *nonce, unsigned char *buf, int off, int len,
            unsigned char *tag, int tagoff, const unsigned char *ad, int adlen) {
  unsigned char *p = buf + off;
  int n;
  if (!begin(&sealing, key, nonce, 1, ad, adlen)) return -1;
  if (len > 0 && cipher_update(sealing.ctx, p, &n, p, len) != 1) return -2;
  if (cipher_final(sealing.ctx, scratch, &n) != 1) return -3;
  if (ctx_ctrl(sealing.ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag + tagoff) != 1) return -4;
  return 0;
}

int tt_open(const unsigned char *key, const unsigned char *nonce, unsigned char *buf, int off, int len,
            unsigned char *tag, int tagoff, const unsigned char *ad, int adlen) {
  unsigned char *p = buf + off;
  int n;
  if (!begin(&opening, key, nonce, 0, ad, adlen)) return -1;
  if (ctx_ctrl(opening.ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag + tagoff) != 1) return -2;
  if (len > 0 && cipher_update(opening.ctx, p, &n, p, len) != 1) return -3;
  /* EVP_CipherFinal_ex compares the tag: 1 if it matches. */
  if (cipher_final(opening.ctx, scratch, &n) == 1) return 1;
  /* EVP decrypted while it authenticated. ChaCha20 is an XOR with a keystream of key and nonce only, so the
     same keystream run over the bytes again restores the ciphertext, as open() promises. */
  if (len > 0) {
    if (!begin(&sealing, key, nonce, 1, 0, 0)) return -4;
    if (cipher_update(sealing.ctx, p, &n, p, len) != 1) return -5;
    cipher_final(sealing.ctx, scratch, &n);
  }
  return 0;
}
`;

/** What each negative result of the helper means. */
const FAILED_STEP: Record<number, string> = {
  [-1]: "EVP_CipherInit_ex (key, nonce or AAD)",
  [-2]: "EVP_CipherUpdate/EVP_CIPHER_CTX_ctrl",
  [-3]: "EVP_CipherUpdate/EVP_CipherFinal_ex",
  [-4]: "EVP_CIPHER_CTX_ctrl(EVP_CTRL_AEAD_GET_TAG) or restoring the data",
  [-5]: "EVP_CipherUpdate while restoring the data",
};

const SYMBOLS = {
  tt_load: { args: ["buffer", "buffer", "i32"], result: "i32" },
  tt_unload: { args: [], result: "void" },
  tt_seal: {
    args: ["buffer", "buffer", "buffer", "i32", "i32", "buffer", "i32", "buffer", "i32"],
    result: "i32",
  },
  tt_open: {
    args: ["buffer", "buffer", "buffer", "i32", "i32", "buffer", "i32", "buffer", "i32"],
    result: "i32",
  },
} as const;

const NO_AD = new Uint8Array(1); // never read: its length passed is 0

/**
 * Compiles the helper and loads libcrypto into it.
 * @returns the cipher: `library` "libcrypto", `calls` 1
 * @throws Error saying why not (Deno, a compile error, libcrypto missing or without ChaCha20-Poly1305)
 */
export function openCompiledLibcrypto(): ChaCha20Poly1305 {
  if (!canCompileC) throw new Error("this runtime cannot compile C (Deno): EVP takes four calls per message");
  const lib = compileC(SOURCE, SYMBOLS);
  const err = new Uint8Array(256);
  if (lib.symbols.tt_load(new TextEncoder().encode(LIBCRYPTO + "\0"), err, err.length) !== 0) {
    lib.close();
    const why = new TextDecoder().decode(err.subarray(0, Math.max(0, err.indexOf(0))));
    throw new Error(`${LIBCRYPTO}: ${why || "could not be loaded"}`);
  }
  const { tt_seal, tt_open, tt_unload } = lib.symbols;
  let closed = false;
  const failed = (what: string, r: number): Error =>
    new Error(`${what}: ${FAILED_STEP[r] ?? `step ${r}`} failed (libcrypto through the compiled helper)`);
  return {
    library: "libcrypto",
    path: LIBCRYPTO,
    calls: 1,
    seal(key, nonce, buf, off, len, tag, tagOff, ad) {
      checkArgs(key, nonce, buf, off, len, tag, tagOff);
      const r = ad === undefined || ad.length === 0
        ? tt_seal(key, nonce, buf, off, len, tag, tagOff, NO_AD, 0)
        : tt_seal(key, nonce, buf, off, len, tag, tagOff, ad, ad.length);
      if (r !== 0) throw failed("seal", r);
    },
    open(key, nonce, buf, off, len, tag, tagOff, ad) {
      checkArgs(key, nonce, buf, off, len, tag, tagOff);
      const r = ad === undefined || ad.length === 0
        ? tt_open(key, nonce, buf, off, len, tag, tagOff, NO_AD, 0)
        : tt_open(key, nonce, buf, off, len, tag, tagOff, ad, ad.length);
      if (r < 0) throw failed("open", r);
      return r === 1;
    },
    close() {
      if (closed) return;
      closed = true;
      tt_unload();
      lib.close();
    },
  };
}
