import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { Refusal } from "../errors.js";
import type { Caller } from "../ports/caller.js";

/** Set by the auth interceptor on every call to a service that requires a token. */
export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "authenticated caller" });

export function requireCaller(ctx: HandlerContext): Caller {
  const caller = ctx.values.get(callerKey);
  if (!caller) throw new Refusal("unauthenticated", "missing caller");
  return caller;
}
