import { Writable } from "node:stream";
import type { LogLevel } from "../../src/config.js";
import { createLogger, type Logger } from "../../src/log.js";

/** The server's logger (createLogger, serializers and all), writing its lines into memory for a test to read. */
export function captureLogs(logLevel: LogLevel = "debug"): { logger: Logger; lines: Record<string, unknown>[]; text(): string } {
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      raw.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      callback();
    },
  });
  return {
    logger: createLogger({ logLevel, nodeId: "test" }, sink),
    get lines() {
      return raw.map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    text: () => raw.join("\n"),
  };
}
