import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ConnectResponseSchema, SubscribeResponseSchema } from "../../../gen/palaver/chat/v1/chat_pb.js";
import { EventSchema } from "../../../gen/palaver/chat/v1/event_pb.js";
import { encodeStoredEvent, eventField, grpcStoredEventLength, writeGrpcStoredEvent } from "./events.js";

/** One event's gRPC message on its own. */
function grpcStoredEventMessage(body: Uint8Array, eventId: bigint): Uint8Array {
  const message = new Uint8Array(grpcStoredEventLength(body, eventId));
  expect(writeGrpcStoredEvent(message, 0, body, eventId)).toBe(message.length);
  return message;
}

// A body over 127 bytes and an event id over 2^14, so both lengths and the id take several varint bytes.
const event = create(EventSchema, {
  chatId: "c".repeat(36),
  kind: { case: "newMessage", value: { messageId: "m".repeat(36), seq: 7n, text: "x".repeat(300) } },
});
const body = encodeStoredEvent(event);
const eventId = 1_234_567n;
const expected = toBinary(
  ConnectResponseSchema,
  create(ConnectResponseSchema, { frame: { case: "event", value: { ...event, eventId } } }),
);

describe("stored events on the wire", () => {
  it("gives a response with the event field the same bytes as encoding the event with its id", () => {
    const response = create(SubscribeResponseSchema);
    response.$unknown = [eventField(body, eventId)];
    const decoded = fromBinary(SubscribeResponseSchema, toBinary(SubscribeResponseSchema, response));
    expect(decoded.event?.eventId).toBe(eventId);
    expect(decoded.event?.chatId).toBe(event.chatId);
    expect(decoded.event?.kind).toEqual(event.kind);
  });

  it("writes the gRPC message of a ConnectResponse carrying the event: prefix, then the canonical encoding", () => {
    const message = grpcStoredEventMessage(body, eventId);
    expect(message[0]).toBe(0);
    expect(new DataView(message.buffer).getUint32(1)).toBe(message.length - 5);
    expect(message.subarray(5)).toEqual(expected);
  });

  it("writes an event id beyond 2^53 exactly (varints of ids that large are worked out on bigints)", () => {
    const huge = 2n ** 60n + 12_345n;
    const message = grpcStoredEventMessage(body, huge);
    expect(fromBinary(ConnectResponseSchema, message.subarray(5)).frame.value).toMatchObject({ eventId: huge });
    const exact = toBinary(ConnectResponseSchema, create(ConnectResponseSchema, { frame: { case: "event", value: { ...event, eventId: huge } } }));
    expect(message.subarray(5)).toEqual(exact);
  });
});
