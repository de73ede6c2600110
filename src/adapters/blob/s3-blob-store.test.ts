import { randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";
import http from "node:http";
import type { AddressInfo } from "node:net";
import {
  GetBucketLifecycleConfigurationCommand,
  HeadObjectCommand,
  type LifecycleRule,
  PutBucketLifecycleConfigurationCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { signPngUpload } from "../../../test/support/blob-uploads.js";
import { freshBucketName, type S3Connection, s3ForSuite } from "../../../test/support/s3-server.js";
import { DependencyUnavailableError } from "../../errors.js";
import { RETENTION_RULE_ID, S3BlobStore, type S3BlobStoreConfig } from "./s3-blob-store.js";

describe("S3BlobStore on SeaweedFS", () => {
  let s3: S3Connection;
  let release: () => Promise<void>;
  let admin: S3Client;
  let config: S3BlobStoreConfig;
  let store: S3BlobStore;

  beforeAll(async () => {
    ({ s3, release } = await s3ForSuite());
    const { endpoint, region } = s3;
    admin = new S3Client({ endpoint, region, forcePathStyle: true, credentials: s3 });
  });
  afterAll(async () => {
    admin?.destroy();
    await release?.();
  });
  beforeEach(async () => {
    config = { ...s3, bucket: freshBucketName(), expireAfterDays: 30 };
    store = new S3BlobStore(config);
    await store.init();
  });
  afterEach(() => store.close());

  async function rules(): Promise<LifecycleRule[]> {
    return (await admin.send(new GetBucketLifecycleConfigurationCommand({ Bucket: config.bucket }))).Rules ?? [];
  }

  it("creates its bucket with a rule expiring objects after expireAfterDays", async () => {
    expect(await rules()).toEqual([
      { ID: RETENTION_RULE_ID, Status: "Enabled", Filter: { Prefix: "" }, Expiration: { Days: 30 } },
    ]);
  });

  it("init() again updates its own rule and keeps the bucket's other rules", async () => {
    const other: LifecycleRule = {
      ID: "someone-else",
      Status: "Enabled",
      Filter: { Prefix: "logs/" },
      Expiration: { Days: 3 },
    };
    await admin.send(
      new PutBucketLifecycleConfigurationCommand({
        Bucket: config.bucket,
        LifecycleConfiguration: { Rules: [other, ...(await rules())] },
      }),
    );
    const again = new S3BlobStore({ ...config, expireAfterDays: 7 });
    await again.init();
    again.close();
    const byId = Object.fromEntries((await rules()).map((r) => [r.ID, r.Expiration?.Days]));
    expect(byId).toEqual({ "someone-else": 3, [RETENTION_RULE_ID]: 7 });
  });

  it("keep() writes the object again, restarting the lifecycle rule's count, with its content type", async () => {
    const body = randomBytes(4096);
    const signed = await signPngUpload(store, "attachments/kept", body);
    expect((await fetch(signed.url, { method: "PUT", headers: signed.headers, body })).status).toBe(200);
    const head = () => admin.send(new HeadObjectCommand({ Bucket: config.bucket, Key: "attachments/kept" }));
    const uploaded = await head();
    await new Promise((resolve) => setTimeout(resolve, 1100)); // Last-Modified has whole seconds
    expect(await store.keep({ key: "attachments/kept", contentType: "image/png" })).toBe(true);
    const kept = await head();
    expect(kept.LastModified!.getTime()).toBeGreaterThan(uploaded.LastModified!.getTime());
    expect(kept.ContentType).toBe("image/png");
    expect(kept.ContentLength).toBe(body.length);
  });

  describe("a client that does not send the pinned headers is refused", () => {
    const body = randomBytes(4096);
    const other = randomBytes(4096);

    async function put(headers: (signed: Record<string, string>) => Record<string, string>, sent: Uint8Array) {
      const signed = await signPngUpload(store, "attachments/x", body);
      const res = await fetch(signed.url, { method: "PUT", headers: headers(signed.headers), body: sent });
      await res.arrayBuffer();
      return res.status;
    }

    it("without the SHA-256 headers", async () => {
      const status = await put(
        ({ "x-amz-checksum-sha256": _, "x-amz-sdk-checksum-algorithm": __, ...rest }) => rest,
        other,
      );
      expect(status).toBeGreaterThanOrEqual(400);
      expect(await store.stat("attachments/x")).toBeNull();
    });

    it("naming another checksum algorithm, with a checksum of other bytes", async () => {
      const crc = Buffer.alloc(4);
      crc.writeUInt32BE(crc32(other));
      const status = await put(
        (signed) => ({
          ...signed,
          "x-amz-sdk-checksum-algorithm": "CRC32",
          "x-amz-checksum-crc32": crc.toString("base64"),
        }),
        other,
      );
      expect(status).toBe(403);
      expect(await store.stat("attachments/x")).toBeNull();
    });

    it("with another content type", async () => {
      expect(await put((signed) => ({ ...signed, "content-type": "text/html" }), body)).toBe(403);
    });
  });

  describe("a store that is down is DependencyUnavailableError", () => {
    it("when nothing listens", async () => {
      const server = http.createServer();
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const { port } = server.address() as AddressInfo;
      await new Promise((resolve) => server.close(resolve));
      await expectUnavailable(`http://127.0.0.1:${port}`);
    });

    it("when it answers 503", async () => {
      const server = http.createServer((_req, res) => res.writeHead(503).end());
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      try {
        await expectUnavailable(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    async function expectUnavailable(endpoint: string) {
      const down = new S3BlobStore({ ...config, endpoint });
      await expect(down.stat("attachments/x")).rejects.toBeInstanceOf(DependencyUnavailableError);
      await expect(down.delete(["attachments/x"])).rejects.toBeInstanceOf(DependencyUnavailableError);
      await expect(down.keep({ key: "attachments/x", contentType: "image/png" })).rejects.toBeInstanceOf(
        DependencyUnavailableError,
      );
      await expect(down.init()).rejects.toBeInstanceOf(DependencyUnavailableError);
      down.close();
    }
  });
});
