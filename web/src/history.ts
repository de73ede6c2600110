import { ChatStore } from "./store.js";

/**
 * This device's history in localStorage, per user and device name. The server deletes what a device acks, so the
 * device keeps its own copy; it is written before any ack goes out.
 */
export class History {
  private readonly key: string;
  private timer: number | undefined;

  constructor(userId: string, deviceName: string) {
    this.key = `palaver.history.${userId}.${deviceName}`;
  }

  load(userId: string): ChatStore {
    return ChatStore.restore(userId, readStorage(this.key));
  }

  /** Soon: typing and scrolling are not slowed by a write per event. */
  saveSoon(store: ChatStore): void {
    if (this.timer !== undefined) return;
    this.timer = window.setTimeout(() => this.saveNow(store), 1000);
  }

  saveNow(store: ChatStore): void {
    window.clearTimeout(this.timer);
    this.timer = undefined;
    try {
      localStorage.setItem(this.key, store.serialize());
    } catch {
      // Storage full or disabled (private mode): the page still works, it just forgets on reload.
    }
  }
}

function readStorage(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}
