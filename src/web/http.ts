import type { NodeHandlerFn } from "../transport/server.js";

/** What connect-node hands its `fallback`: an HTTP/1.1 or an HTTP/2 request and response. */
export type WebRequest = Parameters<NodeHandlerFn>[0];
export type WebResponse = Parameters<NodeHandlerFn>[1];

/**
 * A handler in the server's plain-HTTP chain (see plainHttp in features/operations): it answers a request and resolves
 * true, or resolves false having sent nothing, so the next handler gets its turn.
 */
export type WebHandler = (req: WebRequest, res: WebResponse) => Promise<boolean>;

/** The request's path without its query, or null when the target is not a path (`*`, absolute forms). */
export function pathOf(req: WebRequest): string | null {
  const target = req.url ?? "/";
  if (!target.startsWith("/")) return null;
  const end = target.search(/[?#]/);
  return end === -1 ? target : target.slice(0, end);
}

/**
 * A short answer with a body. An HTTP/1.1 connection whose request body was left unread closes after it (the server
 * sees to that: see startServer).
 */
export function send(
  req: WebRequest,
  res: WebResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  const all: Record<string, string | number> = {
    "content-type": "text/plain; charset=utf-8",
    ...headers,
    "content-length": Buffer.byteLength(body),
    "x-content-type-options": "nosniff",
  };
  res.writeHead(status, all);
  if (req.method === "HEAD") res.end();
  else res.end(body);
}
