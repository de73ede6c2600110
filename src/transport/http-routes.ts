import type { Metrics } from "../features/operations/metrics.js";
import type { NodeHandlerFn } from "./server.js";

export type PlainHandler = (...args: Parameters<NodeHandlerFn>) => Promise<boolean> | boolean;

/**
 * The server's plain HTTP endpoints beside the RPCs: Prometheus metrics and Kubernetes probes. `/livez` answers while
 * the process runs; `/readyz` while it accepts work (not once shutdown began). Other paths go to the next handlers
 * (media URLs, the web client), and 404 when none takes them.
 */
export function plainHttp(options: {
  metrics: Metrics;
  ready: () => boolean;
  next: PlainHandler[];
  onError: (error: unknown) => void;
}): NodeHandlerFn {
  return (req, res) =>
    route(req, res).catch((error: unknown) => {
      options.onError(error);
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end();
    });

  async function route(...[req, res]: Parameters<NodeHandlerFn>): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/metrics") {
      const body = await options.metrics.registry.metrics();
      res.writeHead(200, { "content-type": options.metrics.registry.contentType });
      res.end(body);
      return;
    }
    if (req.method === "GET" && (path === "/livez" || path === "/readyz")) {
      const ok = path === "/livez" || options.ready();
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" });
      res.end(ok ? "ok\n" : "shutting down\n");
      return;
    }
    for (const handler of options.next) {
      if (await handler(req, res)) return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  }
}
