/**
 * The cluster's processes: Palaver nodes (`node --max-semi-space-size=128 --enable-source-maps dist/main.js`, as in
 * production) and HAProxy, each with its output in a log file that a failing test can show (redis-cluster.ts adds the
 * Redis Cluster's servers).
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/**
 * How a Palaver node is started: `node`, these flags, then SERVER_ENTRY, as `npm start` and deploy/Dockerfile start it
 * (scripts/check-deploy.sh checks that those two agree). --max-semi-space-size: docs/scaling.md, "V8's young
 * generation".
 */
export const NODE_ARGS = ["--max-semi-space-size=128", "--enable-source-maps"] as const;
/** The server as `npm run build:server` bundles it (docs/scaling.md, "The server as one bundle"). */
export const SERVER_ENTRY = "dist/main.js";

/** Bundles the server from the current sources into SERVER_ENTRY. */
export async function buildServer(): Promise<void> {
  await promisify(execFile)("npm", ["run", "--silent", "build:server"], { cwd: repoRoot });
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns true; throws naming `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** grpc.health.v1.Health/Check over the Connect protocol on HTTP/1.1: the request HAProxy's check sends. */
export async function healthStatus(url: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${url}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
      signal: AbortSignal.timeout(1000),
    });
    return ((await res.json()) as { status?: string }).status;
  } catch {
    return undefined;
  }
}

/** A child process whose stdout and stderr go to one log file (its folder made if missing). */
export class LoggedProcess {
  protected child: ChildProcess | undefined;
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;

  constructor(readonly logFile: string) {}

  protected launch(command: string, args: string[], env: NodeJS.ProcessEnv): void {
    // The folder may have been wiped since the last launch (Cluster.start clears test-results/cluster).
    mkdirSync(dirname(this.logFile), { recursive: true });
    const log = createWriteStream(this.logFile, { flags: "a" });
    log.write(`--- ${new Date().toISOString()} ${command} ${args.join(" ")}\n`);
    const child = spawn(command, args, { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    this.child = child;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) this.child!.kill(signal);
  }

  /** Resolves when the process has exited (at once if it never started or already has). */
  async exit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return (await this.exited) ?? { code: null, signal: null };
  }

  /** The last lines of the log, for failure messages. */
  tail(lines = 30): string {
    try {
      return readFileSync(this.logFile, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }
}

export interface NodeOptions {
  nodeId: string;
  port: number;
  databaseUrl: string;
  redisUrl: string;
  authSecret: string;
  dataDir: string;
  logDir: string;
}

/** One Palaver node on 127.0.0.1:port. Restartable: the same NODE_ID and port come back. */
export class PalaverNode extends LoggedProcess {
  constructor(readonly options: NodeOptions) {
    super(join(options.logDir, `${options.nodeId}.log`));
  }

  get id(): string {
    return this.options.nodeId;
  }

  get url(): string {
    return `http://127.0.0.1:${this.options.port}`;
  }

  /** Starts the node and resolves once it reports SERVING. */
  async start(): Promise<void> {
    const { options } = this;
    this.launch(process.execPath, [...NODE_ARGS, SERVER_ENTRY], {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      HOST: "127.0.0.1",
      PORT: String(options.port),
      NODE_ID: options.nodeId,
      DATABASE_URL: options.databaseUrl,
      REDIS_URL: options.redisUrl,
      AUTH_SECRET: options.authSecret,
      DATA_DIR: options.dataDir,
      LOG_LEVEL: "warn",
      // The fault tests' few senders send as fast as the nodes answer, faster than a device may by default.
      SEND_LIMIT_PER_MINUTE: "100000",
    });
    try {
      // Stops early when the process exits, which the check below reports.
      await waitFor(`${options.nodeId} to serve`, async () => !this.running || (await healthStatus(this.url)) === "SERVING", 60_000);
    } catch (error) {
      throw new Error(`${options.nodeId} did not start (${(error as Error).message}):\n${this.tail()}`);
    }
    if (!this.running) throw new Error(`${options.nodeId} exited while starting:\n${this.tail()}`);
  }
}

/** HAProxy in the foreground (-db) on a rendered configuration. */
export class HaproxyProcess extends LoggedProcess {
  constructor(
    private readonly configFile: string,
    logFile: string,
    readonly port: number,
    private readonly adminSocket: string,
  ) {
    super(logFile);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.launch("haproxy", ["-db", "-f", this.configFile], { PATH: process.env.PATH });
    await waitFor("haproxy to listen", async () => !this.running || (await this.serverStates()).size > 0, 15_000);
    if (!this.running) throw new Error(`haproxy exited:\n${this.tail()}`);
  }

  /** Each node's state as HAProxy's health checks see it: "UP", "DOWN", "MAINT", "UP 1/2", … */
  async serverStates(): Promise<Map<string, string>> {
    const csv = await this.command("show stat");
    const states = new Map<string, string>();
    for (const line of csv.split("\n")) {
      const fields = line.split(",");
      // pxname, svname, …, status is the 18th column.
      if (fields[0] === "palaver_nodes" && fields[1] !== "BACKEND" && fields[17]) states.set(fields[1]!, fields[17]);
    }
    return states;
  }

  /** One command on the runtime API (the admin socket). */
  command(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(this.adminSocket);
      let out = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk) => (out += chunk));
      socket.on("end", () => resolve(out));
      socket.on("error", reject);
      socket.write(`${line}\n`);
    });
  }
}
