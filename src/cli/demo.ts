import { createHash, randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { AttachmentService } from "../../gen/palaver/chat/v1/attachment_pb.js";
import { mintToken } from "../auth/tokens.js";
import { ConnectDevice, grpcTransport } from "../client/device.js";

/** An 8×8 PNG (a red and blue checkerboard), small enough to inline. */
const demoImage = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAH0lEQVR42mO4YGAARAYJF4AImc2AUwJTCMLGLUEHOwAKqFIBl4YxgwAAAABJRU5ErkJggg==",
  "base64",
);

/**
 * `palaver demo`: two users' devices hold a short conversation through a running server, with a small image, and
 * each device prints what it received and how long delivery took (from the send call to the arrival).
 */
export async function runDemo(options: { url: string; secret: Uint8Array }): Promise<void> {
  const run = randomBytes(3).toString("hex");
  const alice = `alice-${run}`;
  const bob = `bob-${run}`;
  const token = (userId: string, deviceName: string) => mintToken(options.secret, { userId, deviceName }, { ttl: "1h" });
  const devices = {
    [`${alice}/phone`]: ConnectDevice.open(options.url, await token(alice, "phone")),
    [`${alice}/laptop`]: ConnectDevice.open(options.url, await token(alice, "laptop")),
    [`${bob}/phone`]: ConnectDevice.open(options.url, await token(bob, "phone")),
  };
  const [alicePhone, , bobPhone] = Object.values(devices) as [ConnectDevice, ConnectDevice, ConnectDevice];
  await Promise.all(Object.values(devices).map((d) => d.waitForDrained()));
  console.log(`connected ${Object.keys(devices).join(", ")} to ${options.url}`);

  const created = await alicePhone.command({ case: "createChat", value: { name: "demo", participantUserIds: [bob] } });
  if (created.outcome.case !== "createChat") throw new Error(`createChat failed: ${JSON.stringify(created.outcome.value)}`);
  const chatId = created.outcome.value.chat!.chatId;

  const sentAt = new Map<string, number>();
  const say = async (from: ConnectDevice, clientMessageId: string, text: string, attachmentIds: string[] = []) => {
    sentAt.set(clientMessageId, Date.now());
    const result = await from.command({ case: "sendMessage", value: { chatId, clientMessageId, text, attachmentIds } });
    if (result.outcome.case !== "sendMessage") throw new Error(`send failed: ${JSON.stringify(result.outcome.value)}`);
  };
  await say(alicePhone, "1", "Hi Bob! Lunch today?");
  await say(bobPhone, "2", "Sure, 12:30 at the usual place?");
  await say(alicePhone, "3", "Perfect, see you there.");

  const attachments = createClient(AttachmentService, grpcTransport(options.url, await token(bob, "phone")));
  const sha256 = createHash("sha256").update(demoImage).digest();
  const { attachmentId, upload } = await attachments.createAttachment({
    sha256,
    sizeBytes: BigInt(demoImage.length),
    contentType: "image/png",
    fileName: "table.png",
  });
  if (upload) {
    const put = await fetch(upload.url, { method: upload.method, headers: upload.headers, body: demoImage });
    if (!put.ok) throw new Error(`upload refused: ${put.status} ${await put.text()}`);
  }
  await say(bobPhone, "4", "Here's our table", [attachmentId]);

  const expected = { [`${alice}/phone`]: 2, [`${alice}/laptop`]: 4, [`${bob}/phone`]: 2 };
  await Promise.all(Object.entries(devices).map(([name, d]) => d.waitForMessages(expected[name]!)));
  for (const [name, device] of Object.entries(devices)) {
    console.log(`\n${name} received:`);
    device.events.forEach((event, i) => {
      const ms = (clientMessageId: string) => `${device.arrivals[i]! - sentAt.get(clientMessageId)!} ms`;
      switch (event.kind.case) {
        case "chatUpdate":
          console.log(`  chat update: "${event.kind.value.chat?.name}" with ${event.kind.value.chat?.participantUserIds.join(", ")}`);
          break;
        case "newMessage": {
          const m = event.kind.value;
          const files = m.attachments.map((a) => ` [${a.fileName}, ${a.contentType}, ${a.sizeBytes} bytes]`).join("");
          console.log(`  #${m.seq} ${m.senderUserId}/${m.senderDeviceId}: ${m.text}${files}  (delivered in ${ms(m.clientMessageId)})`);
          break;
        }
        case "inboxDrained":
          console.log("  (inbox drained: live from here)");
          break;
        case "receiptUpdate": {
          const r = event.kind.value;
          console.log(`  receipt: ${r.userId} received up to #${r.deliveredSeq}, read up to #${r.readSeq}`);
          break;
        }
      }
    });
    device.ackAll();
  }

  // Bob reads the chat on his phone: Alice's devices see her messages turn to read.
  const read = await bobPhone.command({ case: "markRead", value: { chatId, seq: 4n } });
  if (read.outcome.case !== "markRead") throw new Error(`markRead failed: ${JSON.stringify(read.outcome.value)}`);
  await alicePhone.until(() => (alicePhone.receiptsIn(chatId).get(bob)?.readSeq ?? 0n) >= 4n, `${bob}'s read receipt`);
  const bobsReceipt = alicePhone.receiptsIn(chatId).get(bob)!;
  console.log(
    `\n${alice}/phone: ${bob} received up to #${bobsReceipt.deliveredSeq} and read up to #${bobsReceipt.readSeq}`,
  );

  const aliceAttachments = createClient(AttachmentService, grpcTransport(options.url, await token(alice, "phone")));
  const download = await aliceAttachments.getAttachmentDownload({ attachmentId });
  const bytes = Buffer.from(await (await fetch(download.url)).arrayBuffer());
  const intact = createHash("sha256").update(bytes).digest().equals(sha256);
  console.log(`\n${alice} downloaded table.png: ${bytes.length} bytes, ${intact ? "SHA-256 matches" : "SHA-256 MISMATCH"}`);
  for (const device of Object.values(devices)) device.disconnect();
}
