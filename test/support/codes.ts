import { type Code, ConnectError } from "@connectrpc/connect";

/** The status a call ended with: "ok", or its Connect error code. */
export async function codeOf(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}
