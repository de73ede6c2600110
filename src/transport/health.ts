import type { ConnectRouter } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  Health,
  type HealthCheckRequest,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";

export { ServingStatus };

/**
 * The serving status behind grpc.health.v1: one entry per served service plus "" for the server as a whole.
 * The server flips everything to NOT_SERVING when it starts closing, so load balancers drain it first.
 */
export class HealthStatus {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly waiters = new Set<() => void>();

  set(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const wake of [...this.waiters]) wake();
  }

  /** Sets the status of every service registered so far, "" included. */
  setAll(status: ServingStatus): void {
    for (const service of [...this.statuses.keys(), ""]) this.set(service, status);
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Resolves at the next status change, or when the signal aborts. */
  private changed(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.waiters.delete(wake);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      this.waiters.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  check(request: HealthCheckRequest): { status: ServingStatus } {
    const status = this.get(request.service);
    if (status === undefined) throw new ConnectError(`unknown service "${request.service}"`, Code.NotFound);
    return { status };
  }

  /**
   * Sends the current status, then every change, until the call ends. An unknown service is reported as
   * SERVICE_UNKNOWN and watched in case it appears (as the health protocol asks).
   */
  async *watch(request: HealthCheckRequest, signal: AbortSignal): AsyncGenerator<{ status: ServingStatus }> {
    let sent: ServingStatus | undefined;
    for (;;) {
      const status = this.get(request.service) ?? ServingStatus.SERVICE_UNKNOWN;
      // Send a change that raced with the end of the call (NOT_SERVING at shutdown) before ending.
      if (status !== sent) {
        sent = status;
        yield { status };
      }
      if (signal.aborted) return;
      await this.changed(signal);
    }
  }
}

export function registerHealth(router: ConnectRouter, health: HealthStatus): void {
  router.service(Health, {
    check: (request) => health.check(request),
    watch: (request, context) => health.watch(request, context.signal),
  });
}
