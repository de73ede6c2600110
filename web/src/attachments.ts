import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { UploadTarget } from "../../gen/palaver/chat/v1/attachment_pb.js";
import type { Api } from "./api.js";

/** The API's limit (CreateAttachmentRequest.size_bytes). */
export const MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024;
/**
 * Past this the file is not even read to hash it (Web Crypto digests a whole buffer in memory). Between the API's
 * limit and this, it is hashed and sent to the server, whose validation says what is wrong.
 */
export const MAX_HASHED_BYTES = 1024 * 1024 * 1024;

/** Headers the browser sets itself and refuses from a page; the upload's body gives them their values anyway. */
const browserControlled = new Set(["content-length", "host", "connection", "expect", "transfer-encoding"]);

export async function sha256(file: Blob): Promise<Uint8Array> {
  if (!crypto.subtle) throw new Error("Sending files needs a secure page (https or localhost): Web Crypto is unavailable");
  return new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
}

/** The bytes go straight to the store, with exactly the method and headers the server signed. */
export async function upload(target: UploadTarget, file: Blob): Promise<void> {
  const headers = new Headers();
  for (const [name, value] of Object.entries(target.headers)) {
    if (!browserControlled.has(name.toLowerCase())) headers.set(name, value);
  }
  let response: Response;
  try {
    response = await fetch(webUrl(target.url), { method: target.method, headers, body: file, credentials: "omit" });
  } catch (error) {
    throw new UploadError("Upload failed: the storage server could not be reached", true, { cause: error });
  }
  if (!response.ok) {
    const detail = (await response.text().catch(() => "")).trim();
    // 5xx is the store's trouble (try again); 4xx means these bytes or this URL will never be taken.
    throw new UploadError(`Upload refused (${response.status})${detail ? `: ${detail}` : ""}`, response.status >= 500);
  }
}

export class UploadError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "UploadError";
  }
}

/** Signed download URLs, fetched once per attachment and again shortly before they expire. */
export class DownloadUrls {
  private readonly cache = new Map<string, Promise<{ url: string; expiresAt: number }>>();

  constructor(private readonly api: Api) {}

  async get(attachmentId: string): Promise<string> {
    const cached = this.cache.get(attachmentId);
    if (cached) {
      const found = await cached.catch(() => null);
      if (found && found.expiresAt - Date.now() > 60_000) return found.url;
    }
    const fresh = this.api.attachments.getAttachmentDownload({ attachmentId }).then((res) => ({
      url: webUrl(res.url),
      expiresAt: res.expiresAt ? timestampMs(res.expiresAt) : Date.now() + 5 * 60_000,
    }));
    this.cache.set(attachmentId, fresh);
    fresh.catch(() => {
      if (this.cache.get(attachmentId) === fresh) this.cache.delete(attachmentId);
    });
    return (await fresh).url;
  }

  forget(attachmentId: string): void {
    this.cache.delete(attachmentId);
  }
}

/** Only http(s) URLs go into the page (an href or src of another scheme could run script). */
function webUrl(url: string): string {
  const protocol = new URL(url, window.location.href).protocol;
  if (protocol !== "https:" && protocol !== "http:") throw new Error(`Refusing a media URL with scheme ${protocol}`);
  return url;
}
