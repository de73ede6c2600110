import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { WebHandler } from "../../src/web/http.js";

export interface PlainHttpServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** An HTTP/1.1 server on a loopback port running the handlers in turn; 404 "next" when none takes a request. */
export async function servePlainHttp(handlers: WebHandler[]): Promise<PlainHttpServer> {
  const server = http.createServer(async (req, res) => {
    for (const handler of handlers) if (await handler(req, res)) return;
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("next");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A request with its path sent exactly as given (fetch would normalise `..` and percent-escapes away). */
export function rawRequest(
  port: number,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const target = { host: "127.0.0.1", port, path, method: options.method ?? "GET", headers: options.headers };
    const req = http.request(target, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(options.body);
  });
}
