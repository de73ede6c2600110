import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AccountService,
  BlockUserResponseSchema,
  ListBlockedUsersResponseSchema,
  ListDevicesResponseSchema,
  RemoveDeviceResponseSchema,
  UnblockUserResponseSchema,
} from "../../gen/palaver/chat/v1/account_pb.js";
import type { Blocks } from "../features/account/blocks.js";
import type { Devices } from "../features/account/devices.js";
import { requireCaller } from "./caller.js";

/** AccountService: each RPC handed to Blocks or Devices, its result put into the response message. */
export function accountService(blocks: Blocks, devices: Devices): ServiceImpl<typeof AccountService> {
  return {
    async blockUser(request, ctx) {
      await blocks.block(requireCaller(ctx), request.userId);
      return create(BlockUserResponseSchema);
    },
    async unblockUser(request, ctx) {
      await blocks.unblock(requireCaller(ctx), request.userId);
      return create(UnblockUserResponseSchema);
    },
    async listBlockedUsers(request, ctx) {
      const page = await blocks.list(requireCaller(ctx), request);
      return create(ListBlockedUsersResponseSchema, {
        blockedUsers: page.blockedUsers.map((b) => ({ userId: b.userId, blockedAt: timestampFromDate(b.blockedAt) })),
        nextPageToken: page.nextPageToken,
      });
    },
    async listDevices(_request, ctx) {
      const list = await devices.list(requireCaller(ctx));
      return create(ListDevicesResponseSchema, {
        devices: list.map((d) => ({
          deviceId: d.deviceName,
          createdAt: timestampFromDate(d.createdAt),
          lastSeenAt: timestampFromDate(d.lastSeenAt),
        })),
      });
    },
    async removeDevice(request, ctx) {
      await devices.remove(requireCaller(ctx), request.deviceId);
      return create(RemoveDeviceResponseSchema);
    },
  };
}
