import { Refusal } from "../../errors.js";
import type { Caller } from "../../ports/caller.js";
import type { Clock } from "../../ports/clock.js";
import type { BlockRecord, BlockStore } from "../../ports/db.js";
import { keyPage, type PageRequest } from "../pages.js";

export interface BlockedUsersPage {
  blockedUsers: BlockRecord[];
  /** The last user id of the page when the page is full, else empty. */
  nextPageToken: string;
}

/**
 * Blocking: whom a user refuses. A block is one way and told to no one; what it refuses is checked where the blocked
 * user acts: Chats (creating a chat with the blocker, adding the blocker) and Messaging (sending into a chat of two
 * with the blocker). In larger chats both keep talking, as before the block.
 */
export class Blocks {
  constructor(
    private readonly db: BlockStore,
    private readonly clock: Clock,
  ) {}

  async block(caller: Caller, userId: string): Promise<void> {
    if (userId === caller.userId) throw new Refusal("invalid", "a user cannot block themselves");
    await this.db.blockUser(caller.userId, userId, this.clock.now());
  }

  unblock(caller: Caller, userId: string): Promise<void> {
    return this.db.unblockUser(caller.userId, userId);
  }

  /** The users the caller blocked by user id, a page at a time; the page token is the last user id of the last page. */
  async list(caller: Caller, page: PageRequest): Promise<BlockedUsersPage> {
    const read = (after: string | null, limit: number) => this.db.listBlockedUsers(caller.userId, after, limit);
    const { items, nextPageToken } = await keyPage(page, read, (blocked) => blocked.userId);
    return { blockedUsers: items, nextPageToken };
  }
}

/** Refuses (PERMISSION_DENIED) `actorUserId` putting these users into a chat when any of them blocked the actor. */
export async function refuseBlockedAdditions(
  db: Pick<BlockStore, "blockersAmong">,
  actorUserId: string,
  userIds: readonly string[],
): Promise<void> {
  const blockers = await db.blockersAmong(actorUserId, userIds);
  if (blockers.length === 0) return;
  const who = blockers.length === 1 ? `${blockers[0]} has` : `${blockers.join(", ")} have`;
  throw new Refusal("forbidden", `${who} blocked the caller, who cannot put them into a chat`);
}
