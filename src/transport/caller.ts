import { createContextKey, type HandlerContext, Code, ConnectError } from "@connectrpc/connect";

/** Who is calling: the user and device named by the bearer token, and the key the database gave that device. */
export interface Caller {
  userId: string;
  deviceName: string;
  deviceKey: string;
}

/** Set by the auth interceptor on every call to a service that requires a token. */
export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "authenticated caller" });

export function requireCaller(ctx: HandlerContext): Caller {
  const caller = ctx.values.get(callerKey);
  if (!caller) throw new ConnectError("missing caller", Code.Unauthenticated);
  return caller;
}
