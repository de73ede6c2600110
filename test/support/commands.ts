import { spawn } from "node:child_process";

export interface CommandOutcome {
  /** The exit status, or null when the program was killed (e.g. by the timeout). */
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunningCommand {
  /** Complete stdout lines so far. */
  readonly lines: string[];
  /** Resolves once a stdout line satisfies `match`; rejects if the program ends first or after `timeoutMs`. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves when the program has ended (killed after `timeoutMs` of startCommand). */
  readonly done: Promise<CommandOutcome>;
}

export interface CommandOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/**
 * Starts a program (no shell) and collects its output. Fails with `missing` as the message when the program cannot
 * be found, so a test that needs a tool says which and why instead of being skipped.
 */
export function startCommand(
  command: string,
  args: readonly string[],
  options: CommandOptions & { missing?: string } = {},
): RunningCommand {
  const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  let stdout = "";
  let stderr = "";
  let partial = "";
  const listeners = new Set<() => void>();
  const notify = () => listeners.forEach((listener) => listener());
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
    const parts = (partial + chunk).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
    notify();
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
  let ended = false;
  const done = new Promise<CommandOutcome>((resolve, reject) => {
    child.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      ended = true;
      notify();
      reject(error.code === "ENOENT" && options.missing ? new Error(options.missing) : error);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      if (partial) lines.push(partial);
      ended = true;
      notify();
      resolve({ code, stdout, stderr });
    });
  });
  done.catch(() => {}); // callers that only wait for lines still see the failure there

  return {
    lines,
    done,
    waitForLine(match, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const line = lines.find(match);
          if (line === undefined && !ended) return;
          listeners.delete(check);
          clearTimeout(deadline);
          if (line !== undefined) resolve(line);
          else reject(new Error(`${command} ended before printing the expected line; stderr: ${stderr}`));
        };
        const deadline = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`timed out waiting for a line from ${command}; stdout so far: ${lines.join("\n")}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      });
    },
  };
}

/** Runs a program to its end; see startCommand. */
export function runCommand(
  command: string,
  args: readonly string[],
  options: CommandOptions & { missing?: string } = {},
): Promise<CommandOutcome> {
  return startCommand(command, args, options).done;
}
