/**
 * The floor under the server's CPU per delivery: what Node's HTTP/2 alone costs for a delivery's traffic, one
 * connection per device, with nothing of Palaver in it. A bare server (a child process, run with the server's V8
 * flags) holds one request stream per device and writes gRPC-framed events of the steady scenario's size to random
 * streams at a steady rate; the client (this process, Node's HTTP/2 client) answers each event with an ack frame of
 * its own after `--ack-delay-ms`, as the load generator does at these rates. Prints the server's CPU per delivery
 * (one frame down, one up) to set beside the steady scenario's `server` figure.
 *
 *   npx tsx bench/http2-floor.ts [--devices 10000] [--rate 9000] [--seconds 30] [--ack-delay-ms 50]
 */
import { fork } from "node:child_process";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { NODE_ARGS } from "../test/cluster/processes.js";

/** An event of the steady scenario as the server writes it: ids, chat, seq, sender and a short text. */
const EVENT_BYTES = 180;
/** A Connect frame acking one event id, with answer_errors_only. */
const ACK_BYTES = 14;

type ToServer = { start: number } | { stop: true };
type FromServer = { port: number } | { sent: number; ackBytes: number; cpuMicros: number };

/** A gRPC message of `bytes` bytes with its 5-byte prefix. */
function framed(bytes: number): Buffer {
  const message = Buffer.alloc(5 + bytes, 7);
  message[0] = 0;
  message.writeUInt32BE(bytes, 1);
  return message;
}

function serve(): void {
  const streams: http2.ServerHttp2Stream[] = [];
  let ackBytes = 0;
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc+proto" });
    stream.on("data", (chunk: Buffer) => (ackBytes += chunk.length));
    stream.on("error", () => {});
    streams.push(stream);
  });
  server.listen(0, "127.0.0.1", () => process.send!({ port: (server.address() as AddressInfo).port } satisfies FromServer));

  const event = framed(EVENT_BYTES);
  let sending: { timer: NodeJS.Timeout; cpu: NodeJS.CpuUsage; sent: number } | undefined;
  process.on("message", (message: ToServer) => {
    if ("start" in message) {
      // Every 10 ms, each event to a random device's stream, as a send's fan-out lands on random devices; each in a
      // buffer of its own, as the server encodes each event's frame.
      const perTick = message.start / 100;
      ackBytes = 0;
      const timer = setInterval(() => {
        for (let i = 0; i < perTick; i++) streams[Math.floor(Math.random() * streams.length)]!.write(Buffer.from(event));
        sending!.sent += perTick;
      }, 10);
      sending = { timer, cpu: process.cpuUsage(), sent: 0 };
    } else if (sending) {
      clearInterval(sending.timer);
      const cpu = process.cpuUsage(sending.cpu);
      process.send!({ sent: sending.sent, ackBytes, cpuMicros: cpu.user + cpu.system } satisfies FromServer);
    }
  });
}

async function drive(): Promise<void> {
  const { values } = parseArgs({
    options: {
      devices: { type: "string", default: "10000" },
      rate: { type: "string", default: "9000" },
      seconds: { type: "string", default: "30" },
      "ack-delay-ms": { type: "string", default: "50" },
    },
  });
  const [devices, rate, seconds, ackDelayMs] = [values.devices, values.rate, values.seconds, values["ack-delay-ms"]].map(Number);
  const server = fork(process.argv[1]!, ["--serve"], { execArgv: [...process.execArgv, ...NODE_ARGS] });
  const answer = () => new Promise<FromServer>((resolve) => server.once("message", resolve));
  const tell = (message: ToServer) => server.send(message);
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  const { port } = (await answer()) as { port: number };
  const ack = framed(ACK_BYTES);
  let received = 0;
  const sessions: http2.ClientHttp2Session[] = [];
  for (let i = 0; i < devices!; i++) {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => {});
    sessions.push(session);
    const stream = session.request({ ":method": "POST", ":path": "/floor", "content-type": "application/grpc+proto" });
    stream.on("data", (chunk: Buffer) => {
      const events = Math.floor(chunk.length / (5 + EVENT_BYTES));
      received += events;
      setTimeout(() => {
        for (let e = 0; e < events; e++) stream.write(ack);
      }, ackDelayMs);
    });
    if (i % 500 === 499) await sleep(50); // about 10,000 connects a second, within the listen backlog
  }
  await sleep(3000);
  tell({ start: rate! });
  await sleep(seconds! * 1000);
  tell({ stop: true });
  const { sent, ackBytes, cpuMicros } = (await answer()) as Extract<FromServer, { sent: number }>;
  console.log(
    `${devices} connections, ${rate} events/s for ${seconds} s: sent ${sent}, received ${received}, ` +
      `acks read ${Math.floor(ackBytes / ack.length)}; server CPU ${(cpuMicros / sent).toFixed(1)} µs per delivery ` +
      "(one event down, one ack up)",
  );
  for (const session of sessions) session.destroy();
  server.kill();
}

if (process.argv[2] === "--serve") serve();
else await drive();
