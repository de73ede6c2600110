import type { StreamFrame } from "../../src/features/delivery/device-stream.js";

/** A device stream's frames one at a time (DeviceStream.frames() yields them in batches). */
export async function* oneByOne(batches: AsyncIterable<StreamFrame[]>): AsyncGenerator<StreamFrame> {
  for await (const batch of batches) yield* batch;
}
