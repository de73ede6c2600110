/**
 * Passes `source` through, and yields `keepAlive()` whenever the source has had nothing for `idleMs`: a server stream
 * that browsers read through proxies with idle timeouts (often 60 s) stays open while the chat is quiet. The source
 * is closed when the consumer stops early.
 */
export async function* withKeepAlive<T>(source: AsyncIterable<T>, idleMs: number, keepAlive: () => T): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let finished = false;
  try {
    let next = iterator.next();
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<"idle">((resolve) => (timer = setTimeout(resolve, idleMs, "idle")));
      const first = await Promise.race([next, idle]);
      clearTimeout(timer);
      if (first === "idle") {
        yield keepAlive();
        continue;
      }
      if (first.done) {
        finished = true;
        return;
      }
      yield first.value;
      next = iterator.next();
    }
  } finally {
    if (!finished) await iterator.return?.();
  }
}
