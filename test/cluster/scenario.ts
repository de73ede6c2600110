/**
 * One chat with traffic for a fault test: senders through the load balancer, recipient devices placed on chosen
 * nodes, and the bookkeeping that proves every acknowledged send reached every recipient device exactly once.
 */
import type { Cluster } from "./cluster.js";
import { type Ack, Recipient, Sender, Traffic } from "./devices.js";
import { sleep } from "./processes.js";

export interface ScenarioOptions {
  senders: number;
  recipientUsers: number;
  devicesPerUser: number;
  /** Node index for the i-th recipient device (default: round robin). */
  place?: (i: number) => number;
  pauseMs?: number;
}

export interface Outcome {
  sent: number;
  attempts: number;
  failures: Record<string, number>;
  /** The first error message of each failure code. */
  failureSamples: Record<string, string>;
  abandoned: number;
  recipients: number;
  /** Distinct (device, event) message deliveries, and what full delivery needs: sent × recipients. */
  delivered: number;
  expected: number;
  duplicatesSuppressed: number;
  /** Acknowledged sends a device had not received live, still on its first stream(s), before the final reconnect. */
  missingBeforeReconnect: number;
  /** How many distinct messages those were, and how many of them were acknowledged only on a retry. */
  missingMessages: number;
  missingMessagesRetried: number;
  longestSendMs: number;
  /** From a send's first attempt to the event's arrival, for events pushed live (not drained from the inbox). */
  liveLatencyMsP50: number;
  liveLatencyMsP99: number;
  trafficSeconds: number;
  sendsPerSecond: number;
  /** Node CPU (user + system) per acknowledged send, ms, summed over the nodes. */
  nodeCpuMsPerSend: number;
}

export class Scenario {
  readonly recipients: Recipient[] = [];
  readonly senders: Sender[] = [];
  readonly placement = new Map<Recipient, number>();
  traffic!: Traffic;
  chatId = "";
  private recipientUsers: string[] = [];
  private started = 0;
  private stopped = 0;
  private cpuAtStart: number[] = [];
  private cpuAtStop: number[] = [];

  constructor(
    private readonly cluster: Cluster,
    readonly label: string,
    private readonly options: ScenarioOptions,
  ) {}

  async setUp(): Promise<void> {
    const { cluster, options } = this;
    const senderUsers = Array.from({ length: options.senders }, (_, i) => cluster.user(`${this.label}-s${i}`));
    this.recipientUsers = Array.from({ length: options.recipientUsers }, (_, i) => cluster.user(`${this.label}-r${i}`));
    this.chatId = await cluster.createChat(cluster.lbUrl, senderUsers[0]!, [...senderUsers.slice(1), ...this.recipientUsers]);
    for (const user of senderUsers) this.senders.push(new Sender(user, await cluster.token(user, "phone"), cluster.lbUrl));
    // Every sender's phone is a recipient of the others' messages and never acks, so no message is deleted for being
    // acked by all its devices: the Postgres test counts one stored row per acknowledged send.
    await Promise.all(this.senders.map((s) => s.register(this.chatId)));

    let i = 0;
    for (const user of this.recipientUsers) {
      for (let d = 0; d < options.devicesPerUser; d++, i++) {
        const node = options.place?.(i) ?? i % cluster.nodes.length;
        const recipient = new Recipient(`${user}/dev${d}`, await cluster.token(user, `dev${d}`), cluster.lbUrl);
        this.placement.set(recipient, node);
        this.recipients.push(recipient);
      }
    }
    // Devices are recorded when they first connect; they must exist before the first send to be among its recipients.
    await Promise.all(this.recipients.map((r) => r.connect(cluster.nodes[this.placement.get(r)!]!.url)));
    this.traffic = new Traffic(this.senders, this.chatId, options.pauseMs ?? 10);
  }

  /** The recipient devices whose first stream is on node `index`. */
  on(index: number): Recipient[] {
    return this.recipients.filter((r) => this.placement.get(r) === index);
  }

  start(): void {
    this.cpuAtStart = this.cluster.cpuMs();
    this.started = Date.now();
    this.traffic.start();
  }

  async stop(): Promise<void> {
    await this.traffic.stop();
    this.stopped = Date.now();
    this.cpuAtStop = this.cluster.cpuMs();
  }

  get acks(): Ack[] {
    return this.traffic.acks;
  }

  /** Acknowledged messages each recipient still lacks. */
  missing(): Map<Recipient, Ack[]> {
    const result = new Map<Recipient, Ack[]>();
    for (const r of this.recipients) {
      const have = new Set([...r.received.values()].map((m) => m.messageId));
      const lacking = this.acks.filter((a) => !have.has(a.messageId));
      if (lacking.length > 0) result.set(r, lacking);
    }
    return result;
  }

  private countMissing(): number {
    return [...this.missing().values()].reduce((n, list) => n + list.length, 0);
  }

  /**
   * After the traffic: waits up to `liveWaitMs` for live delivery to complete, counts what is still missing, then
   * reconnects every device through the load balancer (a client's answer to any doubt) so its inbox drains, and waits
   * for everything. Returns the figures; the caller asserts on them and on `verify()`.
   */
  async settle(liveWaitMs = 5000): Promise<Outcome> {
    const deadline = Date.now() + liveWaitMs;
    while (this.countMissing() > 0 && Date.now() < deadline) await sleep(100);
    const missingBeforeReconnect = this.countMissing();
    const missingAcks = new Set([...this.missing().values()].flat());

    const at = Date.now();
    for (const r of this.recipients) r.dropConnection();
    await Promise.all(this.recipients.map((r) => r.waitLive(at)));
    const until = Date.now() + 15_000;
    while (this.countMissing() > 0 && Date.now() < until) await sleep(100);
    // Give stray repeats a moment to show up before they are counted.
    await sleep(300);

    const stats = this.traffic.stats;
    const seconds = Math.max(0.001, (this.stopped - this.started) / 1000);
    const cpu = this.cpuAtStop.reduce((sum, ms, i) => sum + Math.max(0, ms - (this.cpuAtStart[i] ?? ms)), 0);
    return {
      sent: this.acks.length,
      attempts: stats.attempts,
      failures: stats.failures,
      failureSamples: stats.samples,
      abandoned: stats.abandoned.length,
      recipients: this.recipients.length,
      delivered: this.recipients.reduce(
        (n, r) => n + [...r.received.values()].filter((m) => m.chatId === this.chatId).length,
        0,
      ),
      expected: this.acks.length * this.recipients.length,
      duplicatesSuppressed: this.recipients.reduce((n, r) => n + r.duplicatesSuppressed, 0),
      missingBeforeReconnect,
      missingMessages: missingAcks.size,
      missingMessagesRetried: [...missingAcks].filter((a) => a.attempts > 1).length,
      longestSendMs: this.traffic.longestSendMs,
      ...this.liveLatency(),
      trafficSeconds: round(seconds, 1),
      sendsPerSecond: round(this.acks.length / seconds, 0),
      nodeCpuMsPerSend: round(cpu / Math.max(1, this.acks.length), 2),
    };
  }

  private liveLatency(): { liveLatencyMsP50: number; liveLatencyMsP99: number } {
    const started = new Map(this.acks.map((a) => [a.messageId, a.startedAt]));
    const latencies: number[] = [];
    for (const r of this.recipients) {
      for (const m of r.received.values()) {
        const drained = r.drainedAt[m.stream];
        const sentAt = started.get(m.messageId);
        if (sentAt !== undefined && drained !== undefined && m.at > drained) latencies.push(m.at - sentAt);
      }
    }
    latencies.sort((a, b) => a - b);
    const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
    return { liveLatencyMsP50: at(0.5), liveLatencyMsP99: at(0.99) };
  }

  /**
   * Exactly once: per device, each acknowledged message under exactly one event id, nothing extra from this chat,
   * no event id twice on one stream. Returns the problems found (empty when all is well).
   */
  verify(): string[] {
    const problems: string[] = [];
    const ackedIds = new Set(this.acks.map((a) => a.messageId));
    for (const r of this.recipients) {
      const byMessage = new Map<string, bigint[]>();
      for (const m of r.received.values()) {
        if (m.chatId !== this.chatId) continue;
        byMessage.set(m.messageId, [...(byMessage.get(m.messageId) ?? []), m.eventId]);
      }
      const lacking = [...ackedIds].filter((id) => !byMessage.has(id));
      if (lacking.length > 0) problems.push(`${r.name} lacks ${lacking.length} acknowledged messages (${r.describe()})`);
      for (const [id, events] of byMessage) {
        if (events.length > 1) problems.push(`${r.name} got message ${id} under ${events.length} event ids`);
      }
      // Unacknowledged sends (abandoned) may still have been stored; anything else is unexplained.
      const abandoned = new Set(this.traffic.stats.abandoned);
      const extra = [...r.received.values()].filter(
        (m) => m.chatId === this.chatId && !ackedIds.has(m.messageId) && !abandoned.has(m.clientMessageId),
      );
      if (extra.length > 0) problems.push(`${r.name} got ${extra.length} messages no send acknowledged`);
      if (r.duplicatesOnOneStream.length > 0) problems.push(`${r.name}: ${r.duplicatesOnOneStream.slice(0, 5).join("; ")}`);
    }
    return problems;
  }

  close(): void {
    for (const r of this.recipients) r.stop();
  }
}

export function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
