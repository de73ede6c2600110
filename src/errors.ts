/**
 * The domain's errors. Features, auth and adapters throw these and know nothing of the wire; transport/errors.ts maps
 * each to the Connect code a client sees (docs/protocol.md lists them).
 */

/** Why the domain refused a request or ended a stream. */
export type RefusalKind =
  /** The request breaks a rule the schema cannot express (a chat needs two people, a size limit). */
  | "invalid"
  | "not_found"
  /** The caller is who they say, but may not do this. */
  | "forbidden"
  /** Not possible until the client changes something first: an attachment not uploaded yet, a device too many. */
  | "not_ready"
  /** Too many requests; `retryAfterSeconds` says when to try again. */
  | "rate_limited"
  /** No token, or one this server does not accept. */
  | "unauthenticated"
  /** The device opened a newer stream. */
  | "replaced"
  /** The stream's reader fell too far behind; the events stay in the inbox. */
  | "too_slow"
  /** The node is stopping; the client reconnects (elsewhere) and loses nothing. */
  | "shutting_down";

export class Refusal extends Error {
  constructor(
    readonly kind: RefusalKind,
    message: string,
    /** Only for `rate_limited`: whole seconds after which the request may succeed. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "Refusal";
  }
}

/**
 * Thrown by an adapter when the dependency behind it (Postgres, Redis, the blob store) cannot be reached or dropped
 * the connection mid-call. The client may retry (with the same client_message_id).
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
