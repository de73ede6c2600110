/**
 * The server's shutdown: a signal for code that only checks it, and callbacks for the open calls that must end with
 * it. The callbacks are a Set rather than listeners on the AbortSignal: Node's EventTarget walks its whole listener list
 * on every add and remove, and with one listener per open stream (10,000 devices) addEventListener became the server's
 * top function while devices connected (bench/README.md, "Performance changes").
 */
export class Shutdown {
  private readonly controller = new AbortController();
  private readonly callbacks = new Set<() => void>();

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Calls `callback` when the server shuts down, at once if it has; the returned function cancels that. */
  onShutdown(callback: () => void): () => void {
    if (this.signal.aborted) {
      callback();
      return () => {};
    }
    this.callbacks.add(callback);
    return () => this.callbacks.delete(callback);
  }

  /** Aborts the signal with `reason`, then calls every callback once. */
  begin(reason: unknown): void {
    if (this.signal.aborted) return;
    this.controller.abort(reason);
    const callbacks = [...this.callbacks];
    this.callbacks.clear();
    for (const callback of callbacks) callback();
  }
}
