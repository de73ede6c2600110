/** Milliseconds before try number `attempt` (0-based): doubling from 500 ms up to 15 s, jittered so that many tabs
 * coming back after an outage do not knock on the server in step. */
export function backoffDelay(attempt: number): number {
  const ceiling = Math.min(15_000, 500 * 2 ** attempt);
  return Math.round(ceiling * (0.5 + Math.random() * 0.5));
}

/** Resolves after `ms`, or as soon as the browser comes back online, or when `signal` aborts. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
    window.addEventListener("online", done);
    signal?.addEventListener("abort", done);
    if (signal?.aborted) done();
  });
}
