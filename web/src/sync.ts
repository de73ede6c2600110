import { Code, ConnectError } from "@connectrpc/connect";
import type { Event } from "../../gen/palaver/chat/v1/event_pb.js";
import { runAt } from "../../src/token-timers.js";
import type { Api } from "./api.js";
import { backoffDelay, pause } from "./backoff.js";
import type { SessionTokens } from "./session.js";

export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline";

export interface StreamListener {
  /** A stored or live event, in the order the server sent them. */
  event(event: Event): void;
  /** The backlog has been delivered (InboxDrained): the device is up to date. */
  live(): void;
  /** The server dropped events this device never acked: refetch what can be refetched. */
  resync(): void;
  state(state: ConnectionState, detail: string): void;
  /** The server refuses the token, and no fresh one can be had: retrying cannot help. */
  unauthenticated(error: ConnectError): void;
}

/**
 * The device's event stream over Subscribe, kept open: after a drop it reconnects with backoff, and the server sends
 * whatever this device has not acked yet, so nothing is lost; repeats are the store's to drop (by event_id). While the
 * browser reports itself offline it waits for the network instead of knocking. Shortly before the token expires it
 * renews it and moves to a new call with the new one; a call the server ends because its token expired (the renewal
 * came too late: a sleeping laptop, a throttled tab) is renewed and reconnected at once.
 */
export class EventStream {
  private stopped = false;
  private call: AbortController | undefined;
  private wake = new AbortController();
  private attempt = 0;
  private everLive = false;
  private current: ConnectionState = "connecting";

  constructor(
    private readonly api: Api,
    private readonly tokens: SessionTokens,
    private readonly listener: StreamListener,
  ) {}

  get state(): ConnectionState {
    return this.current;
  }

  start(): void {
    window.addEventListener("offline", this.onOffline);
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener("offline", this.onOffline);
    this.call?.abort();
    this.wake.abort();
  }

  /** Skips the wait before the next attempt (the user clicked the connection state). */
  retryNow(): void {
    this.attempt = 0;
    this.wake.abort();
  }

  /** The browser knows before TCP does: end the call at once, so the state says so and the inbox keeps the events. */
  private readonly onOffline = () => this.call?.abort();

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (!navigator.onLine) {
        this.setState("offline", "The browser is offline; waiting for the network");
        await this.sleep(Infinity);
        continue;
      }
      this.setState(this.everLive ? "reconnecting" : "connecting", "Opening the event stream");
      const { failure, opened, renewed } = await this.subscribeOnce();
      if (this.stopped) return;
      if (renewed) continue;
      if (failure?.code === Code.Unauthenticated) {
        // Refused at the start, the token is bad; refused once open, it expired, and a fresh one may be had.
        if (opened && (await this.tokens.renew().then(() => true, () => false))) continue;
        this.setState("offline", failure.rawMessage);
        this.listener.unauthenticated(failure);
        return;
      }
      if (failure?.code === Code.Aborted) {
        // Another tab or window opened a stream as this same device, which replaces this one: do not fight it.
        this.setState("offline", "This device connected from another tab. Click to reconnect here.");
        await this.sleep(Infinity);
        continue;
      }
      if (!navigator.onLine) continue;
      const delay = backoffDelay(this.attempt++);
      const reason = failure ? `${failure.rawMessage}. ` : "";
      this.setState("reconnecting", `${reason}Retrying in ${Math.ceil(delay / 1000)} s`);
      await this.sleep(delay);
    }
  }

  /**
   * One Subscribe call to its end: `failure` null when the server ended it cleanly, else why it failed; `opened` when
   * the server sent anything; `renewed` when it was ended here to move to a renewed token.
   */
  private async subscribeOnce(): Promise<{ failure: ConnectError | null; opened: boolean; renewed: boolean }> {
    const call = (this.call = new AbortController());
    let opened = false;
    let renewed = false;
    const renewAt = this.tokens.renewAt;
    // A call keeps the token it was made with: once a fresh one is here, end it (the next call has it). If none comes,
    // the server ends the call when the token expires.
    const cancelRenewal =
      renewAt === undefined
        ? undefined
        : runAt(renewAt, () => {
            this.tokens.renew().then(
              () => {
                renewed = true;
                call.abort();
              },
              () => undefined,
            );
          });
    try {
      for await (const response of this.api.chat.subscribe({}, { signal: call.signal })) {
        opened = true;
        const event = response.event;
        if (!event) continue;
        switch (event.kind.case) {
          case "inboxDrained":
            this.everLive = true;
            this.attempt = 0;
            this.setState("live", "Receiving messages as they are sent");
            this.listener.live();
            break;
          case "resync":
            this.listener.resync();
            break;
          default:
            this.listener.event(event);
        }
      }
      return { failure: null, opened, renewed };
    } catch (error) {
      return { failure: ConnectError.from(error), opened, renewed };
    } finally {
      cancelRenewal?.();
      this.call = undefined;
    }
  }

  private async sleep(ms: number): Promise<void> {
    if (this.wake.signal.aborted) this.wake = new AbortController();
    await pause(ms, this.wake.signal);
    if (this.wake.signal.aborted && !this.stopped) this.wake = new AbortController();
  }

  private setState(state: ConnectionState, detail: string): void {
    this.current = state;
    this.listener.state(state, detail);
  }
}
