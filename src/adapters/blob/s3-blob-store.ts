import {
  type BucketLocationConstraint,
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetBucketLifecycleConfigurationCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  type LifecycleRule,
  PutBucketLifecycleConfigurationCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { DependencyUnavailableError } from "../../errors.js";
import type { BlobStore } from "../../ports/blob-store.js";
import { type Clock, systemClock } from "../../ports/clock.js";
import { attachmentDisposition } from "./content-disposition.js";
import { assertBlobKey } from "./keys.js";

type SignUploadInput = Parameters<BlobStore["signUpload"]>[0];
type SignDownloadInput = Parameters<BlobStore["signDownload"]>[0];

export interface S3BlobStoreConfig {
  /** Unset for AWS itself. When set (SeaweedFS and most S3-compatible stores) requests use path-style addressing. */
  endpoint?: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Objects expire this many days after their last write: the upload, or keep() (a bucket lifecycle rule). */
  expireAfterDays: number;
}

/** The lifecycle rule this store owns; other rules on the bucket are left as they are. */
export const RETENTION_RULE_ID = "palaver-retention";

/**
 * Headers a pre-signed PUT signs and the client must send as headers. The SDK would hoist x-amz-* headers into the
 * query string, where the store no longer checks the body against them. The checksum algorithm is pinned too: some
 * stores honour an unsigned `x-amz-sdk-checksum-algorithm` naming another algorithm, whose checksum the client would
 * choose.
 * A signed Content-Length makes a body of another length fail the signature.
 */
const PINNED_UPLOAD_HEADERS = new Set([
  "content-length",
  "content-type",
  "x-amz-checksum-sha256",
  "x-amz-sdk-checksum-algorithm",
]);

const DELETE_BATCH = 1000; // DeleteObjects' limit per request

/** Media in an S3 bucket (AWS, SeaweedFS, …); clients move the bytes with pre-signed URLs. */
export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;

  constructor(
    private readonly config: S3BlobStoreConfig,
    private readonly clock: Clock = systemClock,
  ) {
    this.client = new S3Client({
      endpoint: config.endpoint,
      forcePathStyle: config.endpoint !== undefined,
      region: config.region,
      credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
      // Without timeouts a blackholed store would hang the RPCs that stat or sign.
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 30_000 },
    });
  }

  async init(): Promise<void> {
    const Bucket = this.config.bucket;
    if (!(await this.bucketExists())) {
      // us-east-1 is S3's default location and must not be named.
      const LocationConstraint =
        this.config.region === "us-east-1" ? undefined : (this.config.region as BucketLocationConstraint);
      await this.call(
        this.client.send(new CreateBucketCommand({ Bucket, CreateBucketConfiguration: { LocationConstraint } })),
      );
    }
    const rule: LifecycleRule = {
      ID: RETENTION_RULE_ID,
      Status: "Enabled",
      Filter: { Prefix: "" },
      Expiration: { Days: this.config.expireAfterDays },
    };
    const others = (await this.lifecycleRules()).filter((r) => r.ID !== RETENTION_RULE_ID);
    await this.call(
      this.client.send(
        new PutBucketLifecycleConfigurationCommand({ Bucket, LifecycleConfiguration: { Rules: [...others, rule] } }),
      ),
    );
  }

  async signUpload(input: SignUploadInput): ReturnType<BlobStore["signUpload"]> {
    assertBlobKey(input.key);
    if (input.sha256.length !== 32) throw new Error("sha256 must be 32 bytes");
    const checksum = Buffer.from(input.sha256).toString("base64");
    const signingDate = this.clock.now();
    const command = new PutObjectCommand({
      Bucket: this.config.bucket,
      Key: input.key,
      ContentLength: Number(input.sizeBytes),
      ContentType: input.contentType,
      ChecksumAlgorithm: "SHA256",
      ChecksumSHA256: checksum,
    });
    const url = await getSignedUrl(this.client, command, {
      expiresIn: input.expiresInSeconds,
      signingDate,
      signableHeaders: PINNED_UPLOAD_HEADERS,
      unhoistableHeaders: PINNED_UPLOAD_HEADERS,
    });
    return {
      url,
      method: "PUT",
      headers: {
        "content-length": input.sizeBytes.toString(),
        "content-type": input.contentType,
        "x-amz-checksum-sha256": checksum,
        "x-amz-sdk-checksum-algorithm": "SHA256",
      },
      expiresAt: expiry(signingDate, input.expiresInSeconds),
    };
  }

  async signDownload(input: SignDownloadInput): ReturnType<BlobStore["signDownload"]> {
    assertBlobKey(input.key);
    const signingDate = this.clock.now();
    const command = new GetObjectCommand({
      Bucket: this.config.bucket,
      Key: input.key,
      ResponseContentType: input.contentType,
      ResponseContentDisposition: attachmentDisposition(input.fileName),
    });
    const url = await getSignedUrl(this.client, command, { expiresIn: input.expiresInSeconds, signingDate });
    return { url, expiresAt: expiry(signingDate, input.expiresInSeconds) };
  }

  async stat(key: string): Promise<{ sizeBytes: bigint } | null> {
    assertBlobKey(key);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: key }));
      return { sizeBytes: BigInt(head.ContentLength ?? 0) };
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw classify(err);
    }
  }

  /**
   * The lifecycle rule counts from an object's last write, so the object is copied onto itself (inside the store; no
   * bytes pass through here). S3 allows such a copy only when it replaces the metadata: the content type is given again.
   */
  async keep(input: { key: string; contentType: string }): Promise<boolean> {
    assertBlobKey(input.key); // URL-safe, so it needs no escaping in CopySource
    try {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.config.bucket,
          Key: input.key,
          CopySource: `${this.config.bucket}/${input.key}`,
          MetadataDirective: "REPLACE",
          ContentType: input.contentType,
          ChecksumAlgorithm: "SHA256",
        }),
      );
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw classify(err);
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    keys.forEach(assertBlobKey);
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const out = await this.call(
        this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.config.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
        ),
      );
      const failed = out.Errors ?? [];
      if (failed.length > 0) {
        const { Key, Code } = failed[0]!;
        throw new Error(`blob store could not delete ${failed.length} objects, e.g. ${Key}: ${Code}`);
      }
    }
  }

  /** Ends the client's keep-alive sockets. */
  close(): void {
    this.client.destroy();
  }

  private async bucketExists(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.config.bucket }));
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw classify(err);
    }
  }

  private async lifecycleRules(): Promise<LifecycleRule[]> {
    try {
      const out = await this.client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: this.config.bucket }));
      return out.Rules ?? [];
    } catch (err) {
      if (statusOf(err) === 404) return []; // NoSuchLifecycleConfiguration
      throw classify(err);
    }
  }

  private async call<T>(pending: Promise<T>): Promise<T> {
    try {
      return await pending;
    } catch (err) {
      throw classify(err);
    }
  }
}

/** A signature is valid until its X-Amz-Date (whole seconds) plus X-Amz-Expires. */
function expiry(signingDate: Date, expiresInSeconds: number): Date {
  return new Date(Math.floor(signingDate.getTime() / 1000) * 1000 + expiresInSeconds * 1000);
}

function statusOf(err: unknown): number | undefined {
  return err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
}

/**
 * The store down or unreachable (after the SDK's retries) becomes DependencyUnavailableError; a 4xx answer (denied,
 * no such bucket) is a configuration problem and stays as it is.
 */
function classify(err: unknown): unknown {
  const status = statusOf(err);
  const unavailable =
    status !== undefined
      ? status >= 500
      : err instanceof Error && (typeof (err as { code?: unknown }).code === "string" || err.name === "TimeoutError");
  return unavailable ? new DependencyUnavailableError("blob store", { cause: err }) : err;
}
