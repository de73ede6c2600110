import type { Chat } from "../../gen/palaver/chat/v1/model_pb.js";
import { ParticipantOperation } from "../../gen/palaver/chat/v1/chat_pb.js";
import { AckQueue } from "./acks.js";
import { createApi } from "./api.js";
import { DownloadUrls } from "./attachments.js";
import { describeError } from "./errors.js";
import { History } from "./history.js";
import { Outbox } from "./outbox.js";
import { ReadMarker } from "./reads.js";
import { type Session, SessionTokens } from "./session.js";
import { EventStream } from "./sync.js";
import { TypingIndicators, TypingNotifier } from "./typing.js";
import { ChatView } from "./ui/view.js";

/**
 * The signed-in client: restores this device's history, keeps the event stream open, applies and acks events, sends,
 * marks what the user sees read, says when they type, and renders. Returns a function that stops it all.
 */
export function startClient(root: HTMLElement, session: Session, signOut: (notice?: string) => void): () => void {
  const tokens = new SessionTokens(session);
  const api = createApi(() => tokens.token);
  const history = new History(session.userId, session.deviceName);
  const store = history.load(session.userId);
  const downloads = new DownloadUrls(api);
  const acks = new AckQueue(
    async (eventIds) => void (await api.chat.ackEvents({ eventIds })),
    () => history.saveNow(store),
  );
  const typing = new TypingIndicators(session.userId);
  const typingOut = new TypingNotifier(api);
  const reads = new ReadMarker(api, store);
  // Chats an event touched while ListChats was running: the event's version is the newer one.
  let changedDuringList: Set<string> | null = null;

  const view: ChatView = new ChatView(root, store, typing, session, {
    selectChat(chatId) {
      if (store.activeChatId && store.activeChatId !== chatId) typingOut.stop(store.activeChatId);
      store.select(chatId);
    },
    typed: (text) =>
      withChat((chatId) => {
        if (store.chat(chatId)?.member) typingOut.input(chatId, text);
      }),
    sendText: (text) =>
      withChat((chatId) => {
        typingOut.sent(chatId);
        outbox.sendText(chatId, text);
      }),
    sendFiles: (files, text) =>
      withChat((chatId) => {
        typingOut.sent(chatId);
        files.forEach((file, i) => outbox.sendFile(chatId, file, i === 0 ? text : ""));
      }),
    retry: (id) => outbox.retry(id),
    discard: (id) => outbox.discard(id),
    downloadUrl: (id) => downloads.get(id),
    forgetDownloadUrl: (id) => downloads.forget(id),
    async createChat(name, userIds) {
      const { chat } = await api.chat.createChat({ name, participantUserIds: userIds });
      if (chat) {
        changedDuringList?.add(chat.chatId);
        store.upsertChat(chat);
        store.select(chat.chatId);
      }
    },
    addParticipant: (userId) => modify(userId, ParticipantOperation.ADD),
    removeParticipant: (userId) => modify(userId, ParticipantOperation.REMOVE),
    reconnect: () => stream.retryNow(),
    signOut: () => signOut(),
  });
  const outbox = new Outbox(api, store, (message) => view.showError(message));

  const stream = new EventStream(api, tokens, {
    event(event) {
      if (event.kind.case === "typingUpdate") {
        typing.apply(event.chatId, event.kind.value);
        return;
      }
      if (event.kind.case === "newMessage") typing.messageFrom(event.chatId, event.kind.value.senderUserId);
      // Receipt updates (event_id 0) are neither stored nor acked, and change no chat's name or participants.
      const stored = event.eventId !== 0n;
      if (stored && event.chatId) changedDuringList?.add(event.chatId);
      store.applyEvent(event);
      // Repeats are acked again too: the server may not have seen the first ack.
      if (stored) acks.add(event.eventId);
      if (event.chatId && store.chat(event.chatId)?.stub) void fillStubs();
    },
    live() {
      acks.flushNow();
      void refreshChats();
    },
    resync() {
      view.showInfo("Some messages expired on the server before this device received them.");
      void refreshChats();
    },
    state(state, detail) {
      // Off the stream, a `typing: false` would be missed: show no typing that cannot be ended.
      if (state !== "live") typing.clear();
      view.setConnection(state, detail);
    },
    unauthenticated: (error) => signOut(`Signed out: ${error.rawMessage}`),
  });

  function withChat(run: (chatId: string) => void): void {
    if (store.activeChatId) run(store.activeChatId);
  }

  async function modify(userId: string, operation: ParticipantOperation): Promise<boolean> {
    const chatId = store.activeChatId;
    if (!chatId) return false;
    try {
      const { chat } = await api.chat.modifyChatParticipants({ chatId, userId, operation });
      changedDuringList?.add(chatId);
      if (chat) store.upsertChat(chat);
      return true;
    } catch (error) {
      view.showError(describeError(error));
      return false;
    }
  }

  async function refreshChats(): Promise<void> {
    const changed = new Set<string>();
    changedDuringList = changed;
    try {
      const chats: Chat[] = [];
      let pageToken = "";
      do {
        const page = await api.chat.listChats({ pageSize: 500, pageToken });
        chats.push(...page.chats);
        pageToken = page.nextPageToken;
      } while (pageToken);
      store.replaceChatList(chats, changed);
    } catch (error) {
      view.showError(`Could not load your chats. ${describeError(error)}`);
    } finally {
      if (changedDuringList === changed) changedDuringList = null;
    }
    await fillStubs();
  }

  async function fillStubs(): Promise<void> {
    for (const chatId of store.stubs()) {
      try {
        const { chat } = await api.chat.getChat({ chatId });
        if (chat) store.upsertChat(chat);
      } catch {
        // Not visible to this user any more: it stays a stub.
      }
    }
  }

  store.onChange(() => {
    view.render();
    history.saveSoon(store);
    reads.check();
  });
  typing.onChange(() => view.render());
  const saveOnHide = () => history.saveNow(store);
  window.addEventListener("pagehide", saveOnHide);
  reads.start();
  stream.start();

  return () => {
    stream.stop();
    acks.stop();
    reads.stop();
    typingOut.stopAll();
    typing.clear();
    window.removeEventListener("pagehide", saveOnHide);
    history.saveNow(store);
  };
}
