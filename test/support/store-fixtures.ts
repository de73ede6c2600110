/** Inputs for tests of the Db ports: the contract suite, the SQL-only suite, feature tests on MemoryDb. */
import { randomBytes, randomUUID } from "node:crypto";
import {
  type AttachmentRecord,
  type ChatRecord,
  type DeviceSignIn,
  type DeviceStore,
  participantsOf,
  type PendingSend,
  type SendOutcome,
} from "../../src/ports/db.js";

const utf8 = new TextEncoder();

/** A user id no other test uses (tests of a file may share one database). */
export const uniqueUser = (name: string) => `${name}-${randomBytes(4).toString("hex")}`;

/** More devices than any test gives one user, for tests that are not about MAX_DEVICES_PER_USER. */
export const MANY_DEVICES = 1000;

/** The keys of devices, in order, registering those seen for the first time as one batch; throws if one is refused. */
export async function registerDeviceKeys(
  db: Pick<DeviceStore, "registerDevices">,
  devices: readonly DeviceSignIn[],
  now = new Date(),
): Promise<string[]> {
  return (await db.registerDevices(devices, now, MANY_DEVICES)).map((registration) => {
    if (registration.kind !== "device") throw new Error(`device not registered: ${registration.kind}`);
    return registration.deviceKey;
  });
}

/** One device's key, registering it as a first connect would (a batch of one). */
export async function registerDevice(
  db: Pick<DeviceStore, "registerDevices">,
  userId: string,
  deviceName: string,
  now = new Date(),
): Promise<string> {
  const [key] = await registerDeviceKeys(db, [{ userId, deviceName }], now);
  return key!;
}

/** The update body: enough of the chat to check that it is the chat after the change. */
export const encodeUpdate = (chat: ChatRecord) => utf8.encode(`update:${chat.chatId}:${participantsOf(chat).join(",")}`);

/** A send whose body says which message and seq it was encoded for: `message:<messageId>:<seq>`. */
export function send(
  chatId: string,
  senderUserId: string,
  senderDeviceKey: string,
  overrides: Partial<PendingSend> = {},
): PendingSend {
  const messageId = overrides.messageId ?? randomUUID();
  return {
    chatId,
    messageId,
    senderUserId,
    senderDeviceKey,
    clientMessageId: randomUUID(),
    sentAt: new Date(),
    attachmentIds: [],
    encode: (seq) => utf8.encode(`message:${messageId}:${seq}`),
    ...overrides,
  };
}

export function stored(outcome: SendOutcome | undefined) {
  if (outcome?.kind !== "stored") throw new Error(`expected a stored send, got ${outcome?.kind}`);
  return outcome;
}

export function newAttachment(uploaderUserId: string, createdAt = new Date()): AttachmentRecord {
  const attachmentId = randomUUID();
  return {
    attachmentId,
    uploaderUserId,
    sha256: new Uint8Array(randomBytes(32)),
    sizeBytes: 5_000_000_000n,
    contentType: "image/png",
    fileName: "cat.png",
    objectKey: `attachments/${attachmentId}`,
    createdAt,
    uploadedAt: null,
    keptAt: createdAt,
  };
}
