import { renewalTime } from "../../src/token-timers.js";
import { idPattern } from "./ids.js";

/** Who this tab is signed in as. */
export interface Session {
  userId: string;
  deviceName: string;
  token: string;
  /** How: the development sign-in gives a fresh token for the asking; a token minted elsewhere is not renewed here. */
  via: "development" | "token";
}

const SESSION_KEY = "palaver.session";
const DEVICE_KEY = "palaver.device";

/** Per tab (sessionStorage): a reload keeps it, another tab may sign in as someone else. */
export function loadSession(): Session | null {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
    return session && idPattern.test(session.userId) && idPattern.test(session.deviceName) && session.token ? session : null;
  } catch {
    return null;
  }
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  localStorage.setItem(DEVICE_KEY, session.deviceName);
}

export function clearSession(): void {
  sessionStorage.removeItem(SESSION_KEY);
}

/** The device name this browser used last, or a new one: a device is a place that keeps its own inbox. */
export function suggestedDeviceName(): string {
  const last = localStorage.getItem(DEVICE_KEY);
  if (last && idPattern.test(last)) return last;
  const suffix = crypto.getRandomValues(new Uint8Array(3));
  return `browser-${[...suffix].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Development sign-in: the server mints a token when it runs outside production. */
export async function signInForDevelopment(userId: string, deviceName: string): Promise<Session> {
  let response: Response;
  try {
    response = await fetch("/dev/token", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: userId, device: deviceName }),
    });
  } catch {
    throw new Error("The server could not be reached");
  }
  if (response.status === 404) {
    throw new Error(
      "This server has no development sign-in (it runs with NODE_ENV=production or DEV_SIGN_IN=off). " +
        "Sign in with a token from `palaver token --user <id> --device <name>`.",
    );
  }
  const body = (await response.json().catch(() => ({}))) as { token?: string; error?: string };
  if (!response.ok || !body.token) throw new Error(body.error ?? `Sign-in failed (HTTP ${response.status})`);
  return { userId, deviceName, token: body.token, via: "development" };
}

/**
 * A session from a token minted elsewhere (`palaver token`). The claims are only read here to label the page; the
 * server checks the signature on every call.
 */
export function sessionFromToken(token: string): Session {
  let claims: Record<string, unknown>;
  try {
    claims = claimsOf(token);
  } catch {
    throw new Error("That does not look like a Palaver token (a JWT with three dot-separated parts)");
  }
  if (typeof claims.sub !== "string" || typeof claims.device !== "string") {
    throw new Error("The token names no user (sub) or device (device claim)");
  }
  return { userId: claims.sub, deviceName: claims.device, token: token.trim(), via: "token" };
}

/** A JWT's claims, unverified; throws when it is not one. */
function claimsOf(token: string): Record<string, unknown> {
  const base64 = token.trim().split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
}

/**
 * The session's token, renewed where it can be (docs/protocol.md, "Renewing the token"): a development sign-in is
 * asked for a fresh token shortly before the current one expires, and saved; a token minted elsewhere cannot be
 * renewed here, and the session ends when it expires.
 */
export class SessionTokens {
  private renewing: Promise<void> | null = null;

  constructor(private session: Session) {}

  get token(): string {
    return this.session.token;
  }

  /** When to renew the current token (ms since the epoch); undefined when it cannot be renewed. */
  get renewAt(): number | undefined {
    if (this.session.via !== "development") return undefined;
    return renewalTime(claimsOf(this.session.token) as { iat?: number; exp?: number });
  }

  /** Gets a fresh token, which every call carries from then on; one renewal at a time. Rejects when there is none. */
  renew(): Promise<void> {
    this.renewing ??= this.signInAgain().finally(() => (this.renewing = null));
    return this.renewing;
  }

  private async signInAgain(): Promise<void> {
    if (this.session.via !== "development") throw new Error("A token minted elsewhere cannot be renewed here");
    this.session = await signInForDevelopment(this.session.userId, this.session.deviceName);
    saveSession(this.session);
  }
}
