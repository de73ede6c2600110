import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AttachmentService } from "../../gen/palaver/chat/v1/attachment_pb.js";
import { ChatService } from "../../gen/palaver/chat/v1/chat_pb.js";

/** The generated clients, speaking the Connect protocol over fetch to the server that served this page. */
export interface Api {
  chat: Client<typeof ChatService>;
  attachments: Client<typeof AttachmentService>;
}

/** `token` is read at each call: it changes when the session's token is renewed. */
export function createApi(token: () => string, baseUrl = window.location.origin): Api {
  const transport = createConnectTransport({
    baseUrl,
    // Smaller than JSON, and 64-bit ids stay exact.
    useBinaryFormat: true,
    interceptors: [bearer(token)],
  });
  return { chat: createClient(ChatService, transport), attachments: createClient(AttachmentService, transport) };
}

function bearer(token: () => string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token()}`);
    return next(req);
  };
}
