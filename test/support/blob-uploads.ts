import { createHash } from "node:crypto";
import type { BlobStore } from "../../src/ports/blob-store.js";

/** Signs an upload of `body` to `key` as a PNG, valid for a minute. */
export function signPngUpload(store: BlobStore, key: string, body: Uint8Array) {
  return store.signUpload({
    key,
    sizeBytes: BigInt(body.length),
    sha256: createHash("sha256").update(body).digest(),
    contentType: "image/png",
    expiresInSeconds: 60,
  });
}
