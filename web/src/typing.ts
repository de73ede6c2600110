import type { TypingUpdate } from "../../gen/palaver/chat/v1/event_pb.js";
import type { Api } from "./api.js";

/** How long `typing: true` holds when the server does not say (it says 6 s). */
const DEFAULT_LAPSE_MS = 6000;
/** While the user keeps typing, `typing: true` is repeated this often: well inside the server's lapse. */
const RENEW_MS = 3000;
/** Calls per chat are at least this far apart: the server allows a device about one a second. */
const MIN_GAP_MS = 2000;
/** Typing that pauses this long without a send counts as stopped. */
const IDLE_MS = 5000;

/**
 * Who is typing where, from TypingUpdate events: per chat and user, the devices that said so, each until it says it
 * stopped, its lapse passes, or a message from that user arrives. Never stored: typing is only ever now.
 */
export class TypingIndicators {
  /** chat id → user id → device id → the timer that lapses it. */
  private readonly typing = new Map<string, Map<string, Map<string, number>>>();
  private readonly listeners = new Set<() => void>();

  constructor(private readonly me: string) {}

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Users typing in the chat, in the order they started. */
  typers(chatId: string): string[] {
    return [...(this.typing.get(chatId)?.keys() ?? [])];
  }

  apply(chatId: string, update: TypingUpdate): void {
    if (update.userId === this.me) return; // my own other devices: nothing to show here
    const users = this.typing.get(chatId) ?? new Map<string, Map<string, number>>();
    const devices = users.get(update.userId) ?? new Map<string, number>();
    window.clearTimeout(devices.get(update.deviceId));
    devices.delete(update.deviceId);
    if (update.typing) {
      const lapse = update.lapseAfter
        ? Number(update.lapseAfter.seconds) * 1000 + update.lapseAfter.nanos / 1e6
        : DEFAULT_LAPSE_MS;
      devices.set(
        update.deviceId,
        window.setTimeout(() => this.stopDevice(chatId, update.userId, update.deviceId), lapse),
      );
    }
    this.store(chatId, users, update.userId, devices);
    this.changed();
  }

  /** A message from the user: they stopped typing it, on every device. */
  messageFrom(chatId: string, userId: string): void {
    const devices = this.typing.get(chatId)?.get(userId);
    if (!devices) return;
    for (const timer of devices.values()) window.clearTimeout(timer);
    this.typing.get(chatId)!.delete(userId);
    if (this.typing.get(chatId)!.size === 0) this.typing.delete(chatId);
    this.changed();
  }

  /** The stream dropped: a `typing: false` may be lost with it, so nothing shown stays without a fresh word. */
  clear(): void {
    if (this.typing.size === 0) return;
    for (const users of this.typing.values()) {
      for (const devices of users.values()) for (const timer of devices.values()) window.clearTimeout(timer);
    }
    this.typing.clear();
    this.changed();
  }

  private stopDevice(chatId: string, userId: string, deviceId: string): void {
    const users = this.typing.get(chatId);
    const devices = users?.get(userId);
    if (!users || !devices?.delete(deviceId)) return;
    this.store(chatId, users, userId, devices);
    this.changed();
  }

  /** Keeps only non-empty levels, so `typers` lists exactly who types. */
  private store(chatId: string, users: Map<string, Map<string, number>>, userId: string, devices: Map<string, number>) {
    if (devices.size > 0) users.set(userId, devices);
    else users.delete(userId);
    if (users.size > 0) this.typing.set(chatId, users);
    else this.typing.delete(chatId);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }
}

interface Outgoing {
  /** What the composer says now. */
  wanted: boolean;
  /** What the server was last told. */
  told: boolean;
  lastCall: number;
  /** A call held back by MIN_GAP_MS. */
  pending?: number;
  /** Ends `wanted` after IDLE_MS without a keystroke. */
  idle?: number;
}

/**
 * Tells the chat's other participants that this user is typing (SetTyping): `true` on the first keystroke and again
 * every RENEW_MS while keystrokes continue, `false` when the text is cleared, after IDLE_MS without one, or when the
 * user moves to another chat. Sending a message needs no `false`: the message itself ends the typing. Calls per chat
 * are MIN_GAP_MS apart (a held-back call sends the latest state), and a failed one is not retried: typing is a hint.
 */
export class TypingNotifier {
  private readonly chats = new Map<string, Outgoing>();

  constructor(private readonly api: Api) {}

  /** The composer of `chatId` changed to `text`. */
  input(chatId: string, text: string): void {
    const state = this.state(chatId);
    window.clearTimeout(state.idle);
    state.idle = undefined;
    state.wanted = text.trim() !== "";
    if (state.wanted) state.idle = window.setTimeout(() => this.stop(chatId), IDLE_MS);
    this.flush(chatId, state);
  }

  /** The user stopped typing in the chat without sending (they left it). */
  stop(chatId: string): void {
    const state = this.chats.get(chatId);
    if (!state) return;
    window.clearTimeout(state.idle);
    state.idle = undefined;
    state.wanted = false;
    this.flush(chatId, state);
  }

  /** A message went: the server ends the typing with it. */
  sent(chatId: string): void {
    const state = this.chats.get(chatId);
    if (!state) return;
    window.clearTimeout(state.idle);
    window.clearTimeout(state.pending);
    Object.assign(state, { wanted: false, told: false, idle: undefined, pending: undefined });
  }

  stopAll(): void {
    for (const state of this.chats.values()) {
      window.clearTimeout(state.idle);
      window.clearTimeout(state.pending);
    }
    this.chats.clear();
  }

  private state(chatId: string): Outgoing {
    let state = this.chats.get(chatId);
    if (!state) {
      state = { wanted: false, told: false, lastCall: -Infinity };
      this.chats.set(chatId, state);
    }
    return state;
  }

  private flush(chatId: string, state: Outgoing): void {
    const now = Date.now();
    const due = state.wanted ? !state.told || now - state.lastCall >= RENEW_MS : state.told;
    if (!due || state.pending !== undefined) return;
    if (now - state.lastCall < MIN_GAP_MS) {
      state.pending = window.setTimeout(() => {
        state.pending = undefined;
        this.flush(chatId, state);
      }, state.lastCall + MIN_GAP_MS - now);
      return;
    }
    const typing = state.wanted;
    state.lastCall = now;
    state.told = typing;
    this.api.chat.setTyping({ chatId, typing }).catch(() => {
      // Refused or lost: the next keystroke tries again; a lost `false` is ended by the server's lapse.
      if (typing && state.told) state.told = false;
    });
  }
}
