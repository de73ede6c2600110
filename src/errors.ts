/**
 * Thrown by an adapter when the dependency behind it (Postgres, Redis, the blob store) cannot be reached or dropped
 * the connection mid-call. The RPC layer answers UNAVAILABLE: the client may retry (with the same client_message_id).
 */
export class DependencyUnavailableError extends Error {
  constructor(
    readonly dependency: string,
    options?: { cause?: unknown },
  ) {
    super(`${dependency} is unavailable`, options);
    this.name = "DependencyUnavailableError";
  }
}
