import { pino, type DestinationStream, type Logger } from "pino";
import type { Config } from "./config.js";

export type { Logger };

/**
 * The server's one logger: JSON lines on stdout, each tagged with the node id so a cluster's logs can be merged.
 * Tests pass a destination to capture the lines.
 */
export function createLogger(config: Pick<Config, "logLevel" | "nodeId">, destination?: DestinationStream): Logger {
  const options = { level: config.logLevel, base: { node: config.nodeId } };
  return destination ? pino(options, destination) : pino(options);
}
