import { createHash, randomBytes } from "node:crypto";
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AttachmentService } from "../../gen/palaver/chat/v1/attachment_pb.js";
import { ConnectDevice, connectChatClient, connectTransport } from "../../src/client/device.js";
import { freshBucketName, s3ForSuite } from "../support/s3-server.js";
import { startTestServer, type TestServer, uniqueUser } from "../support/server.js";
import { codeOf } from "../support/codes.js";

const DAY_MS = 24 * 60 * 60 * 1000;

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest();

/** The media flow through the server's RPCs and real uploads, on the local store and on S3 (SeaweedFS). */
describe.each(["local", "s3"] as const)("attachments on the %s store", (store) => {
  let server: TestServer;
  let release = async () => {};
  beforeAll(async () => {
    let env: Record<string, string> = {};
    if (store === "s3") {
      const suite = await s3ForSuite();
      release = suite.release;
      env = {
        S3_ENDPOINT: suite.s3.endpoint,
        S3_REGION: suite.s3.region,
        S3_ACCESS_KEY_ID: suite.s3.accessKeyId,
        S3_SECRET_ACCESS_KEY: suite.s3.secretAccessKey,
        S3_BUCKET: freshBucketName(),
      };
    }
    server = await startTestServer("pglite", env);
  });
  afterAll(async () => {
    await server?.close();
    await release();
  });

  async function user(name: string) {
    const userId = uniqueUser(name);
    const token = await server.token(userId, "phone");
    return {
      userId,
      token,
      chat: connectChatClient(server.url, token),
      media: createClient(AttachmentService, connectTransport(server.url, token)),
    };
  }

  async function upload(owner: Awaited<ReturnType<typeof user>>, bytes: Uint8Array, fileName = "photo.jpg") {
    const created = await owner.media.createAttachment({
      sha256: sha256(bytes),
      sizeBytes: BigInt(bytes.length),
      contentType: "image/jpeg",
      fileName,
    });
    /** PUTs to the signed upload, with the signed headers unless told otherwise (the length follows the body). */
    const put = (body: Uint8Array = bytes, url = created.upload!.url) =>
      fetch(url, {
        method: created.upload!.method,
        headers: { ...created.upload!.headers, "content-length": String(body.length) },
        body,
      });
    return { created, put };
  }

  it("round-trips a 5 MiB file to every recipient, who see it in NewMessage", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const bobPhone = ConnectDevice.open(server.url, bob.token);
    await bobPhone.waitForDrained();
    const bytes = randomBytes(5 * 1024 * 1024);
    const { created, put } = await upload(alice, bytes);
    expect(created.alreadyUploaded).toBe(false);
    expect((await put()).ok).toBe(true);

    const { chat } = await alice.chat.createChat({ participantUserIds: [bob.userId] });
    await alice.chat.sendMessage({ chatId: chat!.chatId, clientMessageId: "pic", text: "look", attachmentIds: [created.attachmentId] });
    await bobPhone.waitForMessages(1);
    const [attachment] = bobPhone.messages[0]!.attachments;
    expect(attachment).toMatchObject({ attachmentId: created.attachmentId, contentType: "image/jpeg", sizeBytes: BigInt(bytes.length), fileName: "photo.jpg" });
    expect(Buffer.from(attachment!.sha256).equals(sha256(bytes))).toBe(true);

    const download = await bob.media.getAttachmentDownload({ attachmentId: created.attachmentId });
    const received = Buffer.from(await (await fetch(download.url)).arrayBuffer());
    expect(received.equals(bytes)).toBe(true);
    bobPhone.disconnect();
  });

  it("dedups per uploader: the same bytes again are already_uploaded for their uploader only", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const bytes = randomBytes(1000);
    const first = await upload(alice, bytes);
    expect((await first.put()).ok).toBe(true);
    const again = await upload(alice, bytes);
    expect(again.created).toMatchObject({ alreadyUploaded: true, attachmentId: first.created.attachmentId });
    const other = await upload(bob, bytes);
    expect(other.created.alreadyUploaded).toBe(false);
    expect(other.created.attachmentId).not.toBe(first.created.attachmentId);
  });

  it("refuses wrong bytes, a wrong length, an expired URL and a tampered signature, leaving nothing behind", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const { chat } = await alice.chat.createChat({ participantUserIds: [bob.userId] });
    const bytes = randomBytes(4096);
    const { created, put } = await upload(alice, bytes);
    const wrongBytes = Buffer.from(bytes);
    wrongBytes[0]! ^= 0xff;
    const url = new URL(created.upload!.url);
    const signatureParam = [...url.searchParams.keys()].find((k) => /signature|sig/i.test(k))!;
    url.searchParams.set(signatureParam, url.searchParams.get(signatureParam)!.replace(/^./, (c) => (c === "a" ? "b" : "a")));

    expect((await put(wrongBytes)).ok).toBe(false);
    expect((await put(bytes.subarray(0, 4000))).ok).toBe(false);
    expect((await put(bytes, url.toString())).ok).toBe(false);

    server.clock.advance(-DAY_MS); // a URL signed a day ago has expired
    const stale = await upload(alice, randomBytes(2048), "old.jpg");
    server.clock.advance(DAY_MS);
    expect((await stale.put()).ok).toBe(false);

    for (const attachmentId of [created.attachmentId, stale.created.attachmentId]) {
      expect(await codeOf(alice.chat.sendMessage({ chatId: chat!.chatId, clientMessageId: attachmentId, attachmentIds: [attachmentId] }))).toBe(Code.FailedPrecondition);
      expect(await codeOf(alice.media.getAttachmentDownload({ attachmentId }))).toBe(Code.FailedPrecondition);
    }
  });

  it("refuses a file over the size limit", async () => {
    const alice = await user("alice");
    const request = { sha256: sha256(Buffer.from("x")), sizeBytes: 100n * 1024n * 1024n + 1n, contentType: "video/mp4", fileName: "big.mp4" };
    expect(await codeOf(alice.media.createAttachment(request))).toBe(Code.InvalidArgument);
  });

  it("gives download URLs only to the uploader and participants of a chat where it was sent", async () => {
    const [alice, bob, eve] = [await user("alice"), await user("bob"), await user("eve")];
    const bytes = randomBytes(100);
    const { created, put } = await upload(alice, bytes);
    await put();
    expect(await codeOf(alice.media.getAttachmentDownload({ attachmentId: created.attachmentId }))).toBe("ok");
    expect(await codeOf(bob.media.getAttachmentDownload({ attachmentId: created.attachmentId }))).toBe(Code.PermissionDenied);
    const { chat } = await alice.chat.createChat({ participantUserIds: [bob.userId] });
    await alice.chat.sendMessage({ chatId: chat!.chatId, clientMessageId: "f", attachmentIds: [created.attachmentId] });
    expect(await codeOf(bob.media.getAttachmentDownload({ attachmentId: created.attachmentId }))).toBe("ok");
    expect(await codeOf(eve.media.getAttachmentDownload({ attachmentId: created.attachmentId }))).toBe(Code.PermissionDenied);
    expect(await codeOf(eve.chat.sendMessage({ chatId: chat!.chatId, clientMessageId: "steal", attachmentIds: [created.attachmentId] }))).toBe(Code.PermissionDenied);
  });

  it("refuses a message naming an attachment that was never uploaded", async () => {
    const [alice, bob] = [await user("alice"), await user("bob")];
    const { created } = await upload(alice, randomBytes(64));
    const { chat } = await alice.chat.createChat({ participantUserIds: [bob.userId] });
    expect(await codeOf(alice.chat.sendMessage({ chatId: chat!.chatId, clientMessageId: "n", attachmentIds: [created.attachmentId] }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(alice.chat.sendMessage({ chatId: chat!.chatId, clientMessageId: "u", attachmentIds: ["00000000-0000-4000-8000-000000000001"] }))).toBe(Code.NotFound);
    expect((await alice.chat.getChat({ chatId: chat!.chatId })).chat?.lastSeq).toBe(0n);
  });

  // The last tests: each runs the retention job weeks ahead, which drops today's partitions.
  it("keeps forwarded media for the retention period after the forward, not after the upload", async () => {
    const [alice, bob, carol] = [await user("alice"), await user("bob"), await user("carol")];
    const { created, put } = await upload(alice, randomBytes(500));
    await put();
    const first = await alice.chat.createChat({ participantUserIds: [bob.userId] });
    await alice.chat.sendMessage({ chatId: first.chat!.chatId, clientMessageId: "pic", attachmentIds: [created.attachmentId] });
    /** Runs the retention job `days` after the upload; true when carol can still fetch the forwarded file. */
    const carolHasItOnDay = async (days: number) => {
      server.clock.advance(days * DAY_MS);
      try {
        await server.app.retention.run();
      } finally {
        server.clock.advance(-days * DAY_MS);
      }
      const download = carol.media.getAttachmentDownload({ attachmentId: created.attachmentId });
      if ((await codeOf(download)) !== "ok") return false;
      return (await fetch((await download).url)).ok;
    };

    server.clock.advance(25 * DAY_MS);
    try {
      await server.app.retention.run(); // makes the day's partitions
      const second = await bob.chat.createChat({ participantUserIds: [carol.userId] });
      await bob.chat.sendMessage({ chatId: second.chat!.chatId, clientMessageId: "fwd", attachmentIds: [created.attachmentId] });
    } finally {
      server.clock.advance(-25 * DAY_MS);
    }
    expect(await carolHasItOnDay(40)).toBe(true);
    expect(await carolHasItOnDay(25 + 33)).toBe(false);
  });

  it("deletes attachments and their objects in the retention run two days after the retention period", async () => {
    const alice = await user("alice");
    const bytes = randomBytes(300);
    const { created, put } = await upload(alice, bytes);
    await put();
    const { url } = await alice.media.getAttachmentDownload({ attachmentId: created.attachmentId });
    expect((await fetch(url)).ok).toBe(true);

    server.clock.advance(33 * DAY_MS);
    try {
      const report = await server.app.retention.run();
      expect(report.attachmentsDeleted).toBeGreaterThanOrEqual(1);
    } finally {
      server.clock.advance(-33 * DAY_MS);
    }
    expect(await codeOf(alice.media.getAttachmentDownload({ attachmentId: created.attachmentId }))).toBe(Code.NotFound);
    expect((await fetch(url)).ok).toBe(false);
  });
});
