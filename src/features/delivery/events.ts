import { create, toBinary, type UnknownField } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { WireType } from "@bufbuild/protobuf/wire";
import { type Event, EventSchema, ResyncReason } from "../../../gen/palaver/chat/v1/event_pb.js";
import type { Receipt, ResyncCause } from "../../ports/db.js";

/** The stored form of an event: the whole Event with event_id 0, since each device's inbox entry gives the id. */
export function encodeStoredEvent(event: Event): Uint8Array {
  return toBinary(EventSchema, event);
}

/**
 * One device's copy of a stored event (or of a notice, with event id 0), ready for the wire as field 1 of
 * ConnectResponse or SubscribeResponse (both carry the event there): an unknown field, which protobuf-es writes
 * verbatim. Its bytes are the event_id field, then the stored body (an Event without event_id, fields 2 and up, so the
 * result is the canonical encoding). Why: the event is encoded once for all recipients and the backlog is never decoded
 * and re-encoded; per device this costs one small allocation and a copy instead of a message copy and a full protobuf
 * encode.
 */
export function eventField(body: Uint8Array, eventId: bigint): UnknownField {
  const data = new Uint8Array(eventFieldLength(body, eventId));
  writeEventField(data, 0, body, eventId);
  return { no: 1, wireType: WireType.LengthDelimited, data };
}

/**
 * The same for the gRPC transport's own path: the whole gRPC message (5-byte length prefix) of a ConnectResponse whose
 * only field is this event, written into `into` at `at` (grpcStoredEventLength bytes), so a batch of them takes one
 * allocation. Returns where it ends.
 */
export function writeGrpcStoredEvent(into: Uint8Array, at: number, body: Uint8Array, eventId: bigint): number {
  const responseLength = 1 + eventFieldLength(body, eventId);
  into[at] = 0; // not compressed
  into[at + 1] = responseLength >>> 24;
  into[at + 2] = (responseLength >>> 16) & 0xff;
  into[at + 3] = (responseLength >>> 8) & 0xff;
  into[at + 4] = responseLength & 0xff;
  into[at + 5] = 0x0a; // ConnectResponse field 1 (event), length-delimited
  writeEventField(into, at + 6, body, eventId);
  return at + 5 + responseLength;
}

/** The bytes writeGrpcStoredEvent writes. */
export function grpcStoredEventLength(body: Uint8Array, eventId: bigint): number {
  return 6 + eventFieldLength(body, eventId);
}

/**
 * Bytes of an event field's value with its length: the length, event_id (field 1; left out when 0, as protobuf leaves
 * out a default), then the stored body.
 */
function eventFieldLength(body: Uint8Array, eventId: bigint): number {
  const eventLength = eventIdLength(eventId) + body.length;
  return varintLength(eventLength) + eventLength;
}

function eventIdLength(eventId: bigint): number {
  return eventId === 0n ? 0 : 1 + varintLength(eventId);
}

function writeEventField(into: Uint8Array, start: number, body: Uint8Array, eventId: bigint): void {
  let at = writeVarint(into, start, eventIdLength(eventId) + body.length);
  if (eventId !== 0n) {
    into[at++] = 0x08; // Event field 1 (event_id), varint
    at = writeVarint(into, at, eventId);
  }
  into.set(body, at);
}

/**
 * Varints are worked out on numbers when the value fits in one exactly (event ids do, for any sequence that will ever
 * be reached): bigint arithmetic allocates at every step, and this runs for every delivery.
 */
function asNumber(value: number | bigint): number | bigint {
  return typeof value === "bigint" && value <= MAX_SAFE ? Number(value) : value;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function varintLength(value: number | bigint): number {
  let v = asNumber(value);
  let n = 1;
  if (typeof v === "number") {
    for (; v > 0x7f; v = Math.floor(v / 0x80)) n++;
  } else {
    for (v >>= 7n; v > 0n; v >>= 7n) n++;
  }
  return n;
}

function writeVarint(into: Uint8Array, at: number, value: number | bigint): number {
  let v = asNumber(value);
  if (typeof v === "number") {
    for (; v > 0x7f; v = Math.floor(v / 0x80)) into[at++] = (v % 0x80) | 0x80;
    into[at++] = v;
  } else {
    for (; v > 0x7fn; v >>= 7n) into[at++] = Number(v & 0x7fn) | 0x80;
    into[at++] = Number(v);
  }
  return at;
}

export function inboxDrainedEvent(backlogEvents: number): Event {
  return create(EventSchema, { kind: { case: "inboxDrained", value: { backlogEvents: BigInt(backlogEvents) } } });
}

export function resyncEvent(cause: ResyncCause): Event {
  const reason = cause === "retention" ? ResyncReason.RETENTION : ResyncReason.INBOX_OVERFLOW;
  return create(EventSchema, { kind: { case: "resync", value: { reason } } });
}

/** A participant's receipt as the notice its users get (encoded once for all of them). */
export function receiptUpdateBody(chatId: string, receipt: Receipt): Uint8Array {
  const { userId, deliveredSeq, readSeq } = receipt;
  return encodeStoredEvent(
    create(EventSchema, { chatId, kind: { case: "receiptUpdate", value: { userId, deliveredSeq, readSeq } } }),
  );
}

/** A device's typing, or its stop, as the notice the chat's other participants get. */
export function typingUpdateBody(
  chatId: string,
  typist: { userId: string; deviceName: string },
  typing: boolean,
  lapseMs: number,
): Uint8Array {
  return encodeStoredEvent(
    create(EventSchema, {
      chatId,
      kind: {
        case: "typingUpdate",
        value: {
          userId: typist.userId,
          deviceId: typist.deviceName,
          typing,
          lapseAfter: typing ? durationFromMs(lapseMs) : undefined,
        },
      },
    }),
  );
}
