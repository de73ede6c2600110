import { buildServer } from "./processes.js";

/** vitest globalSetup: the nodes run the server bundled from the sources under test, as deployed. */
export default async function setup(): Promise<void> {
  await buildServer();
}
