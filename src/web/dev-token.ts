import { BlockList, isIPv6 } from "node:net";
import type { Readable } from "node:stream";
import { mintToken } from "../auth/tokens.js";
import { idPattern } from "../api-rules.js";
import { type WebHandler, type WebRequest, type WebResponse, pathOf, send } from "./http.js";

export const DEV_TOKEN_PATH = "/dev/token";

/** How long a dev sign-in lasts: a working day. */
export const DEV_TOKEN_SECONDS = 12 * 3600;

/** A JSON body of two short ids never needs more. */
const MAX_BODY_BYTES = 4096;

export interface DevTokenOptions {
  /** Lifetime of the tokens handed out, seconds; default DEV_TOKEN_SECONDS. */
  ttlSeconds?: number;
  /** Who is answered: clients on this machine (the default), or any client. */
  from?: "local" | "any";
}

/** Loopback addresses, IPv4-mapped ones included (BlockList matches those against the IPv4 subnet). */
const loopback = new BlockList();
loopback.addSubnet("127.0.0.0", 8, "ipv4");
loopback.addAddress("::1", "ipv6");

/**
 * `POST /dev/token {"user": "alice", "device": "laptop"}` → `{"token": "…"}`: sign-in for development, so the web
 * client can be tried without the CLI. Whoever can use it can act as anyone, so by default it answers only clients on
 * this machine (a loopback peer whose request no proxy forwarded); others get 403. It takes only `application/json`,
 * which a cross-site form cannot send and a cross-site script cannot send without a CORS preflight this server never
 * grants.
 */
export function createDevTokenHandler(secret: Uint8Array, options: DevTokenOptions = {}): WebHandler {
  const ttl = options.ttlSeconds ?? DEV_TOKEN_SECONDS;
  const from = options.from ?? "local";
  return async (req, res) => {
    if (pathOf(req) !== DEV_TOKEN_PATH) return false;
    if (from === "local" && !fromThisMachine(req)) {
      const error =
        "development sign-in answers only clients on the server's machine: sign in with a token from " +
        "`palaver token --user <id> --device <name>`, or start the server with DEV_SIGN_IN=any";
      json(req, res, 403, { error });
      return true;
    }
    if (req.method !== "POST") {
      json(req, res, 405, { error: "use POST" }, { allow: "POST" });
      return true;
    }
    const type = String(req.headers["content-type"] ?? "");
    if (!/^application\/json\s*(;|$)/i.test(type)) {
      json(req, res, 415, { error: "send a JSON body with content-type: application/json" });
      return true;
    }
    const body = await readBody(req, MAX_BODY_BYTES);
    if (body === "gone") return true;
    if (body === "too large") {
      json(req, res, 413, { error: `the body is over ${MAX_BODY_BYTES} bytes` });
      return true;
    }
    const input = parse(body);
    if (typeof input === "string") {
      json(req, res, 400, { error: input });
      return true;
    }
    const token = await mintToken(secret, { userId: input.user, deviceName: input.device }, { ttl });
    json(req, res, 200, { token, user: input.user, device: input.device });
    return true;
  };
}

/**
 * Whether the client is on this machine. A proxy on this machine makes every client it forwards look local; one that
 * says so in a forwarding header is refused (one that does not, or an L4 balancer here, needs DEV_SIGN_IN=off).
 */
function fromThisMachine(req: WebRequest): boolean {
  const address = req.socket.remoteAddress;
  if (address === undefined || req.headers.forwarded !== undefined || req.headers["x-forwarded-for"] !== undefined) {
    return false;
  }
  return loopback.check(address, isIPv6(address) ? "ipv6" : "ipv4");
}

/** The ids, or what is wrong with the body. */
function parse(body: Buffer): { user: string; device: string } | string {
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    return "the body is not valid JSON";
  }
  if (typeof value !== "object" || value === null) return 'expected {"user": "…", "device": "…"}';
  const { user, device } = value as Record<string, unknown>;
  for (const [name, id] of [
    ["user", user],
    ["device", device],
  ] as const) {
    if (typeof id !== "string" || !idPattern.test(id)) {
      return `${name} must be 1 to 128 letters, digits or . _ @ - starting with a letter or digit (${idPattern.source})`;
    }
  }
  return { user: user as string, device: device as string };
}

/**
 * The whole body; "too large" as soon as it passes `limit` bytes (the rest is left unread, and the connection closes
 * after the answer); "gone" when the client went away first. Events rather than async iteration: leaving an iteration early
 * would destroy the request, and with it the socket the answer has to go out on.
 */
function readBody(req: WebRequest, limit: number): Promise<Buffer | "too large" | "gone"> {
  if (Number(req.headers["content-length"] ?? 0) > limit) return Promise.resolve("too large");
  const body = req as unknown as Readable;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (result: Buffer | "too large" | "gone") => {
      body.off("data", onData).off("end", onEnd).off("error", onGone).off("close", onGone);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      body.pause();
      finish("too large");
    };
    const onEnd = () => finish(Buffer.concat(chunks));
    const onGone = () => finish("gone");
    body.on("data", onData).on("end", onEnd).on("error", onGone).on("close", onGone);
  });
}

function json(req: WebRequest, res: WebResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const all = { "content-type": "application/json", "cache-control": "no-store", ...headers };
  send(req, res, status, JSON.stringify(value), all);
}
