import http2 from "node:http2";

/**
 * A device on a stalled network: it opens its Connect stream over raw HTTP/2 and stops reading, so HTTP/2 flow
 * control holds the server's writes. `endedWith` then reads everything and returns the grpc-status the stream ended
 * with (the trailers come after the data the server had queued).
 */
export async function openStalledStream(baseUrl: string, token: string) {
  const session = http2.connect(baseUrl);
  const stream = session.request({
    ":method": "POST",
    ":path": "/palaver.chat.v1.ChatService/Connect",
    "content-type": "application/grpc+proto",
    te: "trailers",
    authorization: `Bearer ${token}`,
  });
  await new Promise<void>((resolve, reject) => {
    stream.once("response", () => resolve());
    stream.once("error", reject);
  });
  stream.pause();
  return {
    endedWith(): Promise<number | undefined> {
      return new Promise((resolve, reject) => {
        stream.on("trailers", (trailers) => resolve(Number(trailers["grpc-status"])));
        stream.on("error", reject);
        stream.on("end", () => {
          session.close();
          resolve(undefined);
        });
        stream.resume();
      });
    },
  };
}
