/**
 * The timing around a token's expiry, shared by the server (a stream ends when its token expires), the TypeScript
 * client and the web client (both renew their token shortly before it expires; docs/protocol.md, "Renewing the
 * token"). Plain code for Node and browsers alike.
 */

/** setTimeout's longest delay, 2^31-1 ms (about 24.8 days): a longer one fires at once. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/**
 * Calls `run` at `atMs` (ms since the epoch), or at once when that has passed; a 30-day token is further off than one
 * setTimeout reaches, so the wait is taken in steps. In Node the timers are unref'd: a pending one keeps no process
 * alive. Returns a function that cancels it.
 */
export function runAt(atMs: number, run: () => void): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const step = () => {
    const wait = atMs - Date.now();
    if (wait <= 0) return run();
    timer = setTimeout(step, Math.min(wait, MAX_DELAY_MS));
    // Node's timers have unref; browsers' are numbers.
    (timer as unknown as { unref?: () => void }).unref?.();
  };
  step();
  return () => clearTimeout(timer);
}

/**
 * When a client renews a token with these claims (seconds since the epoch): once three quarters of its lifetime have
 * passed, and at most a minute before it expires (ms since the epoch), leaving a short token time to renew on a busy
 * device. Undefined without `exp`.
 */
export function renewalTime(claims: { iat?: number; exp?: number }): number | undefined {
  const { iat, exp } = claims;
  if (exp === undefined) return undefined;
  return (exp - Math.min((exp - (iat ?? exp)) / 4, 60)) * 1000;
}
