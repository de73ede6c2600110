import { startApp } from "./app.js";
import { ConfigError, loadConfig } from "./config.js";

/** `npm start`: one Palaver node on the configuration in the environment; SIGTERM or SIGINT stops it cleanly. */
async function main(): Promise<void> {
  const app = await startApp(loadConfig());
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`${signal}: stopping`);
    app.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

main().catch((error: unknown) => {
  console.error(error instanceof ConfigError ? error.message : error);
  process.exit(1);
});
