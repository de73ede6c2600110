import { Code, ConnectError } from "@connectrpc/connect";
import type { Event } from "../../gen/palaver/chat/v1/event_pb.js";
import type { Api } from "./api.js";
import { backoffDelay, pause } from "./backoff.js";

export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline";

export interface StreamListener {
  /** A stored or live event, in the order the server sent them. */
  event(event: Event): void;
  /** The backlog has been delivered (InboxDrained): the device is up to date. */
  live(): void;
  /** The server dropped events this device never acked: refetch what can be refetched. */
  resync(): void;
  state(state: ConnectionState, detail: string): void;
  /** The server refuses the token: retrying cannot help. */
  unauthenticated(error: ConnectError): void;
}

/**
 * The device's event stream over Subscribe, kept open: after a drop it reconnects with backoff, and the server sends
 * whatever this device has not acked yet, so nothing is lost; repeats are the store's to drop (by event_id). While the
 * browser reports itself offline it waits for the network instead of knocking.
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
      const failure = await this.subscribeOnce();
      if (this.stopped) return;
      if (failure?.code === Code.Unauthenticated) {
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

  /** One Subscribe call to its end: null when the server ended it cleanly, else why it failed. */
  private async subscribeOnce(): Promise<ConnectError | null> {
    const call = (this.call = new AbortController());
    try {
      for await (const response of this.api.chat.subscribe({}, { signal: call.signal })) {
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
      return null;
    } catch (error) {
      return ConnectError.from(error);
    } finally {
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
