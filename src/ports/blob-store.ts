/**
 * The media store port. Clients move the bytes themselves with pre-signed URLs; the server only signs and checks.
 * Implementations: S3 (any S3-compatible store) and a local directory the server exposes with HMAC-signed URLs.
 */
export interface BlobStore {
  /** Creates what the store needs (a bucket and its lifecycle rule, a directory). */
  init(): Promise<void>;
  /**
   * A URL the client PUTs exactly `sizeBytes` bytes to, with these headers, before `expiresAt`; the store refuses a
   * body of another length or SHA-256 and keeps nothing of it. The headers include Content-Length, which HTTP clients
   * set from the body themselves (browsers do not let a page set it). `key` is server-generated (`attachments/<id>`):
   * slash-separated URL-safe segments, never a prefix of another key.
   */
  signUpload(input: { key: string; sizeBytes: bigint; sha256: Uint8Array; contentType: string; expiresInSeconds: number }): Promise<{
    url: string;
    method: "PUT";
    headers: Record<string, string>;
    expiresAt: Date;
  }>;
  /** A URL that GETs the object before `expiresAt`, served as `contentType` and as a download named `fileName`. */
  signDownload(input: { key: string; fileName: string; contentType: string; expiresInSeconds: number }): Promise<{
    url: string;
    expiresAt: Date;
  }>;
  /**
   * Restarts the object's own expiry, if the store has one, as a later message carries it again; false when there is
   * no object. `contentType` is the one it was uploaded with (a store may have to write it again).
   */
  keep(input: { key: string; contentType: string }): Promise<boolean>;
  /** The stored object's size, or null when there is none. */
  stat(key: string): Promise<{ sizeBytes: bigint } | null>;
  /** Removes these objects; keys with no object are fine. */
  delete(keys: readonly string[]): Promise<void>;
}
