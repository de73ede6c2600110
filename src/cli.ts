import { parseArgs } from "node:util";
import { resolveAuthSecret } from "./auth/secret.js";
import { defaultTtlSeconds, mintToken } from "./auth/tokens.js";
import { loadConfig } from "./config.js";
import { runDemo } from "./cli/demo.js";
import { runRetentionOnce } from "./app.js";

const usage = `usage:
  palaver token --user U --device D [--ttl 30d]   mint a bearer token with the server's secret
  palaver retention run                            run the retention job once and print what it did
  palaver demo [--url http://localhost:8080]       a short scripted conversation against a running server`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "token": {
      const { values } = parseArgs({
        args: rest,
        options: { user: { type: "string" }, device: { type: "string" }, ttl: { type: "string" } },
      });
      if (!values.user || !values.device) throw new UsageError("token needs --user and --device");
      const config = loadConfig();
      const secret = await resolveAuthSecret(config);
      // By default no longer than this server accepts (MAX_TOKEN_LIFETIME).
      const ttl = values.ttl ?? Math.min(defaultTtlSeconds, config.maxTokenLifetimeSeconds);
      console.log(await mintToken(secret, { userId: values.user, deviceName: values.device }, { ttl }));
      return;
    }
    case "retention": {
      if (rest[0] !== "run") throw new UsageError("retention takes one subcommand: run");
      console.log(JSON.stringify(await runRetentionOnce(loadConfig()), null, 2));
      return;
    }
    case "demo": {
      const { values } = parseArgs({ args: rest, options: { url: { type: "string" } } });
      const config = loadConfig();
      await runDemo({
        url: values.url ?? `http://127.0.0.1:${config.port}`,
        secret: await resolveAuthSecret(config),
      });
      return;
    }
    default:
      throw new UsageError(command ? `unknown command "${command}"` : "no command given");
  }
}

class UsageError extends Error {}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(error instanceof UsageError ? `${error.message}\n${usage}` : error);
  process.exitCode = error instanceof UsageError ? 2 : 1;
});
