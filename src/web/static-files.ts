import { open, realpath } from "node:fs/promises";
import { extname, join, resolve, sep } from "node:path";
import type { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type WebHandler, type WebRequest, type WebResponse, pathOf, send } from "./http.js";

const contentTypes: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".webmanifest": "application/manifest+json",
  ".txt": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".wasm": "application/wasm",
};

/**
 * The page may talk to the API on its own origin and to media URLs anywhere (S3, or the local store under another
 * host name for the same server); nothing else runs or loads.
 */
const htmlPolicy = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data: http: https:",
  "connect-src 'self' http: https:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

export interface StaticFilesOptions {
  /** Files under this path have content hashes in their names (Vite's output), so browsers may keep them forever. */
  immutablePrefix?: string;
}

/**
 * Serves a built single-page app (`web/dist`) for GET and HEAD: `/` and `…/` as their index.html, other paths as the
 * file they name. Paths that leave the directory, name a dotfile, or are not a regular file are left to the next
 * handler. The directory is read per request, so a rebuild shows without a restart.
 */
export function createStaticFiles(root: string, options: StaticFilesOptions = {}): WebHandler {
  const base = resolve(root);
  const immutablePrefix = options.immutablePrefix ?? "/assets/";
  return async (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const path = pathOf(req);
    if (path === null) return false;
    const segments = decodeSegments(path.endsWith("/") ? `${path}index.html` : path);
    if (segments === null) return false;
    const file = join(base, ...segments);
    if (!file.startsWith(base + sep)) return false;
    const served = await serveFile(req, res, file, base, path.startsWith(immutablePrefix));
    if (!served && path === "/") {
      send(req, res, 404, "The web client is not built. Run: npm run build:web\n");
      return true;
    }
    return served;
  };
}

/**
 * The path's segments, percent-decoded one by one so an encoded slash cannot join two; null for anything that could
 * step outside the root or reach a hidden file (`..`, `.env`, backslashes, NUL, empty segments).
 */
function decodeSegments(path: string): string[] | null {
  const segments: string[] = [];
  for (const raw of path.slice(1).split("/")) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return null;
    }
    if (segment === "" || segment.startsWith(".") || /[/\\\0]/.test(segment)) return null;
    segments.push(segment);
  }
  return segments;
}

async function serveFile(req: WebRequest, res: WebResponse, file: string, base: string, immutable: boolean) {
  let handle;
  try {
    // A symlink inside the directory must not lead out of it.
    const real = await realpath(file);
    const realBase = await realpath(base);
    if (!real.startsWith(realBase + sep)) return false;
    handle = await open(real, "r");
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
  try {
    const found = await handle.stat();
    if (!found.isFile()) return false;
    const type = contentTypes[extname(file).toLowerCase()] ?? "application/octet-stream";
    const etag = `W/"${found.size.toString(16)}-${Math.floor(found.mtimeMs).toString(16)}"`;
    const headers: Record<string, string | number> = {
      "content-type": type,
      etag,
      "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
      "x-content-type-options": "nosniff",
    };
    if (type.startsWith("text/html")) {
      headers["content-security-policy"] = htmlPolicy;
      // Signed media URLs must not leak to other sites through the Referer header.
      headers["referrer-policy"] = "no-referrer";
    }
    if (req.headers["if-none-match"] === etag) {
      res.writeHead(304, headers);
      res.end();
      return true;
    }
    headers["content-length"] = found.size;
    res.writeHead(200, headers);
    if (req.method === "HEAD") {
      res.end();
      return true;
    }
    // Both HTTP/1's and HTTP/2's responses are writable streams; connect-node's type just does not say so.
    await pipeline(handle.createReadStream({ autoClose: false }), res as unknown as Writable);
  } catch (err) {
    if (!clientGone(err)) throw err;
  } finally {
    await handle.close();
  }
  return true;
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP" || code === "ENAMETOOLONG";
}

function clientGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ECONNRESET" || code === "ERR_HTTP2_STREAM_ERROR";
}
