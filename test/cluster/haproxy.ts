import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./processes.js";

export interface HaproxyLayout {
  port: number;
  statsPort: number;
  adminSocket: string;
  nodes: { name: string; port: number }[];
  /** The global maxconn (default 4,000: the production figure needs about twice as many file descriptors as a test machine allows). */
  maxconn?: number;
  /** Threads HAProxy runs (default: its own, one per CPU it may use). */
  nbthread?: number;
}

/**
 * deploy/haproxy.cfg for loopback: the same settings (mode, balance, timeouts, retries, health check, server options),
 * with the frontends bound to 127.0.0.1 on free ports, the nodes at 127.0.0.1:port, the admin socket in the test's
 * directory, no DNS resolvers (the addresses are literal), and the layout's global maxconn (and thread count). Fails
 * when the file no longer has what it rewrites.
 */
export function renderHaproxyConfig(layout: HaproxyLayout): string {
  const source = readFileSync(join(repoRoot, "deploy/haproxy.cfg"), "utf8");
  let serversWritten = false;
  const seen = { bind: 0, stats: 0, socket: 0, maxconn: 0 };
  const out: string[] = [];
  let section = "";
  for (const line of source.split("\n")) {
    const trimmed = line.trim();
    if (/^\S/.test(line)) section = trimmed;
    if (section.startsWith("resolvers")) continue;
    if (trimmed.startsWith("bind ")) {
      const port = section === "frontend stats" ? layout.statsPort : layout.port;
      section === "frontend stats" ? seen.stats++ : seen.bind++;
      out.push(`    bind 127.0.0.1:${port}`);
    } else if (section === "global" && trimmed.startsWith("maxconn ")) {
      seen.maxconn++;
      out.push(`    maxconn ${layout.maxconn ?? 4000}`);
      if (layout.nbthread !== undefined) out.push(`    nbthread ${layout.nbthread}`);
    } else if (trimmed.startsWith("stats socket ")) {
      seen.socket++;
      out.push(`    stats socket ${layout.adminSocket} mode 600 level admin`);
    } else if (trimmed.startsWith("default-server ")) {
      out.push(line.replace(/ resolvers \S+/, "").replace(/ init-addr \S+/, ""));
    } else if (trimmed.startsWith("server ")) {
      if (!serversWritten) {
        for (const node of layout.nodes) out.push(`    server ${node.name} 127.0.0.1:${node.port}`);
        serversWritten = true;
      }
    } else {
      out.push(line);
    }
  }
  if (!serversWritten || seen.bind !== 1 || seen.stats !== 1 || seen.socket !== 1 || seen.maxconn !== 1) {
    throw new Error(
      "deploy/haproxy.cfg changed shape: expected one palaver bind, one stats bind, a stats socket, a global maxconn and server lines",
    );
  }
  return out.join("\n");
}
