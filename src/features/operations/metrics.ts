import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/**
 * The server's Prometheus metrics, in a registry of its own (several servers can share a process in tests).
 * Features get this object and count what they do; /metrics exposes it.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly sends = new Counter({
    name: "palaver_sends_total",
    help: "SendMessage calls that stored a message (stored) or answered a retry (duplicate)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly deliveries = new Counter({
    name: "palaver_deliveries_total",
    help: "Events pushed live to a device stream on this node (backlog not included)",
    registers: [this.registry],
  });
  readonly deliveryLatency = new Histogram({
    name: "palaver_delivery_latency_seconds",
    help: "From a message's sent_at to its live push being written to a recipient device's stream",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly backlog = new Histogram({
    name: "palaver_inbox_backlog_events",
    help: "Inbox depth of a device when its stream opened (events sent before InboxDrained)",
    buckets: [0, 1, 10, 100, 1000, 10_000, 100_000],
    registers: [this.registry],
  });
  readonly handoffs = new Counter({
    name: "palaver_bus_handoffs_total",
    help: "Events handed to another node's devices through the bus (out) or received from other nodes (in)",
    labelNames: ["direction"] as const,
    registers: [this.registry],
  });
  readonly rpcs = new Counter({
    name: "palaver_rpcs_total",
    help: "RPCs by procedure and final status code",
    labelNames: ["procedure", "code"] as const,
    registers: [this.registry],
  });
  readonly rpcSeconds = new Histogram({
    name: "palaver_rpc_duration_seconds",
    help: "RPC duration by procedure (streams: their whole life)",
    labelNames: ["procedure"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10, 60, 600],
    registers: [this.registry],
  });

  constructor(connectedDevices: () => number) {
    new Gauge({
      name: "palaver_connected_devices",
      help: "Device streams open on this node",
      registers: [this.registry],
      collect() {
        this.set(connectedDevices());
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: "palaver_process_" });
  }

  countCall(call: { procedure: string; code: string; seconds: number }): void {
    this.rpcs.inc({ procedure: call.procedure, code: call.code });
    this.rpcSeconds.observe({ procedure: call.procedure }, call.seconds);
  }
}
