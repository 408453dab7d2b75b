/**
 * poll(2) on a thread of its own, for Bun: a wait that neither blocks the JavaScript event loop nor wakes it
 * every few milliseconds. Deno runs such a call on its own threads (a `nonblocking` FFI symbol, ffi/poll.ts);
 * bun:ffi has no such calls, so this small C helper, compiled at run time by Bun's TinyCC (see
 * ffi/runtime.ts compileC), starts a detached thread that polls a copy of the descriptors and reports back
 * through a thread-safe callback, which Bun runs on the event loop.
 *
 * Only readiness comes back (how many descriptors have events): the caller polls its own set once more
 * without waiting to learn which. Measured on Bun 1.4.5 here: a wake-up reaches JavaScript in about 0.04 ms
 * (median; about 1 ms in one case of ten), and a 1 s wait costs about 1.6 ms of CPU where 5 ms slices cost
 * about 17 ms. The slow tail is why cmd/poller.ts uses it only once the tunnel is quiet.
 * @module
 */
import { canCompileC, compileC, runtimeName, threadsafeCallback } from "./runtime.ts";

/** Descriptors one wait takes at most. */
export const THREAD_POLL_MAX_FDS = 16;

const SOURCE = String.raw`
/* typetun: poll(2) on a detached thread, reporting through a callback (ffi/thread_poll.ts). */
#define POLLIN 1
#define MAX_FDS 16

struct pollfd {
  int fd;
  short events;
  short revents;
};
struct job {
  struct pollfd fds[MAX_FDS];
  int count, timeout, token;
};

extern int poll(struct pollfd *fds, unsigned long count, int timeout);
extern int pthread_create(unsigned long *thread, const void *attr, void *(*start)(void *), void *arg);
extern int pthread_detach(unsigned long thread);
extern int *__errno_location(void);
extern void *malloc(unsigned long size);
extern void free(void *p);

static void (*report)(int token, int result);

void tt_poll_init(void (*callback)(int, int)) {
  report = callback;
}

static void *run(void *arg) {
  struct job *j = arg;
  int n = poll(j->fds, j->count, j->timeout);
  int token = j->token;
  if (n < 0) n = -*__errno_location();
  free(j);
  report(token, n);
  return 0;
}

/* Starts a wait for any of fds[0..count) to be readable, up to timeout ms (-1: no limit). 0 when started; the
   callback then gets (token, how many are ready, 0 on timeout, or -errno). */
int tt_poll_start(const int *fds, int count, int timeout, int token) {
  unsigned long thread;
  struct job *j;
  int i;
  if (!report || count < 0 || count > MAX_FDS) return -1;
  j = malloc(sizeof(struct job));
  if (!j) return -2;
  for (i = 0; i < count; i++) {
    j->fds[i].fd = fds[i];
    j->fds[i].events = POLLIN;
    j->fds[i].revents = 0;
  }
  j->count = count;
  j->timeout = timeout;
  j->token = token;
  if (pthread_create(&thread, 0, run, j) != 0) {
    free(j);
    return -3;
  }
  pthread_detach(thread);
  return 0;
}
`;

const SYMBOLS = {
  tt_poll_init: { args: ["usize"], result: "void" },
  tt_poll_start: { args: ["buffer", "i32", "i32", "i32"], result: "i32" },
} as const;

let helper: { start: (fds: Int32Array, count: number, timeout: number, token: number) => number } | undefined;
const pending = new Map<number, (n: number) => void>();
let nextToken = 1;

function load() {
  if (helper) return helper;
  if (!canCompileC) throw new Error(`${runtimeName} cannot compile C: no thread for poll`);
  const lib = compileC(SOURCE, SYMBOLS);
  lib.symbols.tt_poll_init(
    threadsafeCallback((token, n) => {
      const resolve = pending.get(token);
      pending.delete(token);
      resolve?.(n);
    }),
  );
  return helper = { start: lib.symbols.tt_poll_start };
}

/** Whether {@link pollOnThread} can work here (Bun); compiles the helper on first use. */
export function threadPollAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits on another thread until one of `fds[0..count)` is readable (or fails), or `timeoutMs` passes.
 * @returns how many descriptors are ready, 0 on timeout
 * @throws Error when the helper cannot be compiled or the thread not started, or with poll's errno
 */
export function pollOnThread(fds: Int32Array, count: number, timeoutMs: number): Promise<number> {
  const { start } = load();
  if (count > THREAD_POLL_MAX_FDS) {
    throw new RangeError(`pollOnThread takes ${THREAD_POLL_MAX_FDS} fds at most`);
  }
  const token = nextToken;
  nextToken = (nextToken % 0x7fffffff) + 1;
  return new Promise<number>((resolve, reject) => {
    pending.set(
      token,
      (n) => n >= 0 ? resolve(n) : reject(new Error(`poll on a thread failed: errno ${-n}`)),
    );
    const r = start(fds, count, Math.max(-1, Math.floor(timeoutMs)), token);
    if (r !== 0) {
      pending.delete(token);
      reject(new Error(`poll on a thread could not start (${r})`));
    }
  });
}
