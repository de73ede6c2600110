import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type Event, EventSchema, ResyncReason } from "../../../gen/palaver/chat/v1/event_pb.js";
import type { ResyncCause } from "../../ports/db.js";

/** The stored form of an event: the whole Event with event_id 0, since each device's inbox row gives the id. */
export function encodeStoredEvent(event: Event): Uint8Array {
  return toBinary(EventSchema, event);
}

export function decodeStoredEvent(body: Uint8Array, eventId: bigint): Event {
  const event = fromBinary(EventSchema, body);
  event.eventId = eventId;
  return event;
}

/** One device's copy of an event pushed live: the shared template with that device's inbox event id. */
export function withEventId(template: Event, eventId: bigint): Event {
  return { ...template, eventId };
}

export function inboxDrainedEvent(backlogEvents: number): Event {
  return create(EventSchema, { kind: { case: "inboxDrained", value: { backlogEvents: BigInt(backlogEvents) } } });
}

export function resyncEvent(cause: ResyncCause): Event {
  const reason = cause === "retention" ? ResyncReason.RETENTION : ResyncReason.INBOX_OVERFLOW;
  return create(EventSchema, { kind: { case: "resync", value: { reason } } });
}
