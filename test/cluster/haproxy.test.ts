/**
 * deploy/haproxy.cfg's health check against stand-in nodes: it must send the Connect-protocol health request a Palaver
 * node answers, take SERVING as up, and NOT_SERVING (which contains "SERVING") as down. A real node never shows
 * NOT_SERVING on a new connection (it stops listening as it starts draining), so this is where that case is checked.
 */
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { renderHaproxyConfig } from "./haproxy.js";
import { freePort, HaproxyProcess, waitFor } from "./processes.js";

const servers: http.Server[] = [];
let haproxy: HaproxyProcess | undefined;
let dir = "";

afterAll(async () => {
  haproxy?.signal("SIGTERM");
  await haproxy?.exit();
  for (const server of servers) server.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Answers the health check with `status`, and records the requests it got. */
async function standIn(status: string, requests: string[]): Promise<number> {
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      requests.push(`${req.method} ${req.url} ${req.headers["content-type"]} ${body}`);
      const ok = req.method === "POST" && req.url === "/grpc.health.v1.Health/Check" && body === "{}";
      res.writeHead(ok ? 200 : 404, { "content-type": "application/json" });
      res.end(ok ? JSON.stringify({ status }) : "{}");
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

it("marks a node that answers SERVING up and one that answers NOT_SERVING down", async () => {
  dir = await mkdtemp(join(tmpdir(), "palaver-haproxy-"));
  const seen: string[] = [];
  const nodes = [
    { name: "node1", port: await standIn("SERVING", seen) },
    { name: "node2", port: await standIn("NOT_SERVING", []) },
  ];
  const configFile = join(dir, "haproxy.cfg");
  const adminSocket = join(dir, "admin.sock");
  const port = await freePort();
  await writeFile(configFile, renderHaproxyConfig({ port, statsPort: await freePort(), adminSocket, nodes }));
  haproxy = new HaproxyProcess(configFile, join(dir, "haproxy.log"), port, adminSocket);
  await haproxy.start();

  await waitFor("node1 UP and node2 DOWN", async () => {
    const states = await haproxy!.serverStates();
    return states.get("node1") === "UP" && states.get("node2") === "DOWN";
  }, 15_000, 200);
  expect(seen[0]).toBe("POST /grpc.health.v1.Health/Check application/json {}");
});
