import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { BlobStore } from "../../ports/blob-store.js";
import { type Clock, systemClock } from "../../ports/clock.js";
import { attachmentDisposition } from "./content-disposition.js";
import { assertBlobKey, isBlobKey } from "./keys.js";
import { type BlobRequest, type BlobResponse, receiveUpload, reply, sendObject } from "./local-blob-http.js";

type SignUploadInput = Parameters<BlobStore["signUpload"]>[0];
type SignDownloadInput = Parameters<BlobStore["signDownload"]>[0];

export interface LocalBlobStoreConfig {
  /** Where objects live (DATA_DIR/blobs). One server per directory: init() discards unfinished uploads. */
  dir: string;
  /**
   * The server as clients reach it, e.g. `http://localhost:8080`; object URLs are `<publicUrl>/blobs/<key>?…`. A
   * function is asked at each signing, for a server that learns its port only once it listens.
   */
  publicUrl: string | (() => string);
  /** The key of the URLs' HMAC-SHA256. Use one of its own, not the token secret. */
  secret: string | Uint8Array;
  /** Told of a request that failed on the server's side (a full disk) after the client got a 500. */
  onError?: (err: unknown) => void;
}

/** The path prefix handleRequest answers under; a proxy in front must pass it through unchanged. */
export const LOCAL_BLOB_PATH = "/blobs/";

const INCOMING = ".incoming"; // keys never start with a dot, so no object lands here

/** What a URL grants besides its key and expiry, in signing order: an upload's body, a download's presentation. */
const GRANTED = { PUT: ["size", "sha256"], GET: ["type", "name"] } as const;

/**
 * Media in a local directory, served by Palaver itself (mount handleRequest). URLs carry what they allow (key,
 * expiry, and for an upload its size and SHA-256, for a download its content type and file name) under an HMAC of all
 * of it, so the handler needs no state to check a request.
 */
export class LocalBlobStore implements BlobStore {
  constructor(
    private readonly config: LocalBlobStoreConfig,
    private readonly clock: Clock = systemClock,
  ) {}

  async init(): Promise<void> {
    await rm(join(this.config.dir, INCOMING), { recursive: true, force: true });
    // Media are the users': only the server's user may read them (files are written 0600).
    await mkdir(join(this.config.dir, INCOMING), { recursive: true, mode: 0o700 });
  }

  async signUpload(input: SignUploadInput): ReturnType<BlobStore["signUpload"]> {
    assertBlobKey(input.key);
    if (input.sha256.length !== 32) throw new Error("sha256 must be 32 bytes");
    const expires = this.expires(input.expiresInSeconds);
    const size = input.sizeBytes.toString();
    const sha256 = Buffer.from(input.sha256).toString("hex");
    return {
      url: this.url("PUT", input.key, expires, { size, sha256 }),
      method: "PUT",
      headers: { "content-length": size, "content-type": input.contentType },
      expiresAt: new Date(expires * 1000),
    };
  }

  async signDownload(input: SignDownloadInput): ReturnType<BlobStore["signDownload"]> {
    assertBlobKey(input.key);
    const expires = this.expires(input.expiresInSeconds);
    return {
      url: this.url("GET", input.key, expires, { type: input.contentType, name: input.fileName }),
      expiresAt: new Date(expires * 1000),
    };
  }

  async stat(key: string): Promise<{ sizeBytes: bigint } | null> {
    assertBlobKey(key);
    try {
      const found = await stat(this.pathOf(key));
      return found.isFile() ? { sizeBytes: BigInt(found.size) } : null; // a directory is a key prefix, not an object
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return null;
      throw err;
    }
  }

  /** Nothing expires here but what the retention job deletes, so there is no clock to restart. */
  async keep(input: { key: string }): Promise<boolean> {
    return (await this.stat(input.key)) !== null;
  }

  async delete(keys: readonly string[]): Promise<void> {
    keys.forEach(assertBlobKey);
    await Promise.all(keys.map((key) => rm(this.pathOf(key), { force: true })));
  }

  /**
   * Answers GET and PUT under /blobs/ (for connect-node's `fallback`). Resolves false, having sent nothing, when the
   * path is not ours; never rejects. 403 for a bad signature or an expired URL, 400/413 for a body that does not match
   * its URL, 404 for no object, 500 (and onError) for a failure of the server's own.
   */
  readonly handleRequest = async (req: BlobRequest, res: BlobResponse): Promise<boolean> => {
    const url = new URL(req.url ?? "/", "http://unused");
    if (!url.pathname.startsWith(LOCAL_BLOB_PATH)) return false;
    try {
      await this.serve(req, res, url);
    } catch (err) {
      if (!res.headersSent) reply(res, 500, "blob store failure");
      else res.destroy();
      (this.config.onError ?? console.error)(err);
    }
    return true;
  };

  private async serve(req: BlobRequest, res: BlobResponse, url: URL): Promise<void> {
    const key = url.pathname.slice(LOCAL_BLOB_PATH.length);
    if (!isBlobKey(key)) return reply(res, 404, "no such object");
    if (req.method !== "GET" && req.method !== "PUT") {
      res.setHeader("allow", "GET, PUT");
      return reply(res, 405, "only GET and PUT");
    }
    const q = url.searchParams;
    const refused = this.refusal(req.method, key, q);
    if (refused) return reply(res, 403, refused);
    if (req.method === "PUT") {
      const incomingDir = join(this.config.dir, INCOMING);
      const size = Number(q.get("size"));
      return receiveUpload(req, res, { path: this.pathOf(key), incomingDir, size, sha256Hex: q.get("sha256")! });
    }
    const contentDisposition = attachmentDisposition(q.get("name")!);
    return sendObject(res, this.pathOf(key), { contentType: q.get("type")!, contentDisposition });
  }

  /** Why this URL does not allow the request (a bad signature, its expiry), or null when it does. */
  private refusal(method: "GET" | "PUT", key: string, query: URLSearchParams): string | null {
    const expires = Number(query.get("expires"));
    const grant = GRANTED[method].map((name) => query.get(name));
    const signature = query.get("signature");
    if (!Number.isSafeInteger(expires) || signature === null || grant.includes(null)) return "bad signature";
    const expected = Buffer.from(this.signature(method, key, expires, grant as string[]));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return "bad signature";
    if (this.clock.now().getTime() > expires * 1000) return "this URL has expired";
    return null;
  }

  private pathOf(key: string): string {
    return join(this.config.dir, ...key.split("/"));
  }

  /** Whole seconds, as in the URL. */
  private expires(expiresInSeconds: number): number {
    return Math.floor(this.clock.now().getTime() / 1000) + expiresInSeconds;
  }

  private url(method: "GET" | "PUT", key: string, expires: number, grant: Record<string, string>): string {
    const values = GRANTED[method].map((name) => grant[name]!);
    const query = new URLSearchParams({ expires: String(expires), ...grant });
    query.set("signature", this.signature(method, key, expires, values));
    const { publicUrl } = this.config;
    const base = (typeof publicUrl === "string" ? publicUrl : publicUrl()).replace(/\/+$/, "");
    return `${base}${LOCAL_BLOB_PATH}${key}?${query}`;
  }

  /** JSON keeps the signed fields unambiguous whatever they hold (a file name may contain any separator). */
  private signature(method: string, key: string, expires: number, grant: readonly string[]): string {
    const message = JSON.stringify(["palaver-blob/1", method, key, expires, ...grant]);
    return createHmac("sha256", this.config.secret).update(message).digest("base64url");
  }
}
