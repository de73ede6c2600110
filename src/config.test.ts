import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { CreateAttachmentRequestSchema } from "../gen/palaver/chat/v1/attachment_pb.js";
import { CreateChatRequestSchema, ModifyChatParticipantsRequestSchema } from "../gen/palaver/chat/v1/chat_pb.js";
import { idInputPattern, idPattern as webIdPattern } from "../web/src/ids.js";
import { attachmentBytesRule, idPattern, participantsRule, stringPattern } from "./api-rules.js";
import { ConfigError, loadConfig } from "./config.js";

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe("loadConfig", () => {
  it("fills in the defaults", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      host: "0.0.0.0",
      dataDir: "./data",
      databaseUrl: undefined,
      redisUrl: undefined,
      s3: undefined,
      authSecret: undefined,
      authJwksUrl: undefined,
      maxTokenLifetimeSeconds: 30 * 86_400,
      retentionDays: 30,
      subscribeKeepAliveSeconds: 25,
      tls: undefined,
      logLevel: "info",
      nodeEnv: "development",
      devSignIn: "local",
      limits: {
        maxParticipants: 100,
        maxInboxEvents: 100_000,
        streamQueueLimit: 10_000,
        maxAttachmentBytes: 100 * 1024 * 1024,
        sendBatchMax: 256,
        sendsPerMinute: 600,
        chatChangesPerDevicePerHour: 60,
        chatChangesPerUserPerHour: 120,
        uploadsPerHour: 100,
        uploadBytesPerHour: 2 * 1024 ** 3,
        acksPerMinute: 1200,
        readsPerMinute: 1200,
        typingPerMinute: 60,
        maxDevicesPerUser: 8,
      },
    });
    expect(config.nodeId).toMatch(/^node-[0-9a-f]{12}$/);
    expect(loadConfig({}).nodeId).not.toBe(config.nodeId);
  });

  it("reads every variable", () => {
    const dir = mkdtempSync(join(tmpdir(), "palaver-config-"));
    for (const name of ["cert.pem", "key.pem"]) writeFileSync(join(dir, name), "x");
    const config = loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: "/var/lib/palaver",
      DATABASE_URL: "postgres://palaver@db/palaver",
      REDIS_URL: "redis://redis:6379",
      S3_ENDPOINT: "http://s3:8333",
      S3_BUCKET: "media",
      S3_REGION: "us-east-1",
      S3_ACCESS_KEY_ID: "id",
      S3_SECRET_ACCESS_KEY: "secret",
      AUTH_SECRET: "s".repeat(32),
      AUTH_JWKS_URL: "https://idp.example/.well-known/jwks.json",
      MAX_TOKEN_LIFETIME: "12h",
      RETENTION_DAYS: "7",
      SUBSCRIBE_KEEPALIVE_SECONDS: "50",
      NODE_ID: "node-a",
      TLS_CERT_FILE: join(dir, "cert.pem"),
      TLS_KEY_FILE: join(dir, "key.pem"),
      LOG_LEVEL: "debug",
      NODE_ENV: "production",
      DEV_SIGN_IN: "any",
      MAX_PARTICIPANTS: "50",
      MAX_INBOX_EVENTS: "1000",
      STREAM_QUEUE_LIMIT: "500",
      MAX_ATTACHMENT_BYTES: "1048576",
      SEND_BATCH_MAX: "64",
      SEND_LIMIT_PER_MINUTE: "30",
      CHAT_CHANGE_LIMIT_PER_DEVICE_PER_HOUR: "10",
      CHAT_CHANGE_LIMIT_PER_USER_PER_HOUR: "20",
      UPLOAD_LIMIT_PER_HOUR: "5",
      UPLOAD_BYTES_LIMIT_PER_HOUR: "2097152",
      ACK_LIMIT_PER_MINUTE: "90",
      READ_LIMIT_PER_MINUTE: "300",
      TYPING_LIMIT_PER_MINUTE: "20",
      MAX_DEVICES_PER_USER: "3",
    });
    expect(config).toEqual({
      port: 0,
      host: "127.0.0.1",
      dataDir: "/var/lib/palaver",
      databaseUrl: "postgres://palaver@db/palaver",
      redisUrl: "redis://redis:6379",
      s3: { endpoint: "http://s3:8333", bucket: "media", region: "us-east-1", accessKeyId: "id", secretAccessKey: "secret" },
      authSecret: "s".repeat(32),
      authJwksUrl: "https://idp.example/.well-known/jwks.json",
      maxTokenLifetimeSeconds: 43_200,
      retentionDays: 7,
      subscribeKeepAliveSeconds: 50,
      nodeId: "node-a",
      tls: { certFile: join(dir, "cert.pem"), keyFile: join(dir, "key.pem") },
      logLevel: "debug",
      nodeEnv: "production",
      devSignIn: "any",
      limits: {
        maxParticipants: 50,
        maxInboxEvents: 1000,
        streamQueueLimit: 500,
        maxAttachmentBytes: 1048576,
        sendBatchMax: 64,
        sendsPerMinute: 30,
        chatChangesPerDevicePerHour: 10,
        chatChangesPerUserPerHour: 20,
        uploadsPerHour: 5,
        uploadBytesPerHour: 2097152,
        acksPerMinute: 90,
        readsPerMinute: 300,
        typingPerMinute: 20,
        maxDevicesPerUser: 3,
      },
    });
  });

  it("turns dev sign-in on for this machine only by default, off in production, as DEV_SIGN_IN says when set", () => {
    expect(loadConfig({}).devSignIn).toBe("local");
    expect(loadConfig({ NODE_ENV: "production" }).devSignIn).toBe("off");
    expect(loadConfig({ NODE_ENV: "production", DEV_SIGN_IN: "local" }).devSignIn).toBe("local");
    expect(loadConfig({ DEV_SIGN_IN: "off" }).devSignIn).toBe("off");
    expect(problemsOf({ DEV_SIGN_IN: "yes" })).toEqual(['DEV_SIGN_IN must be one of off, local, any, got "yes"']);
  });

  it("treats empty values as unset", () => {
    expect(loadConfig({ PORT: "", DATABASE_URL: " ", S3_BUCKET: "" })).toMatchObject({ port: 8080, databaseUrl: undefined });
  });

  it("takes a Redis Cluster's seed nodes as REDIS_URL", () => {
    expect(problemsOf({ REDIS_URL: "redis+cluster://r1:6379,r2:6379" })).toEqual([]);
    expect(problemsOf({ REDIS_URL: "redis+cluster://" })).toHaveLength(1);
  });

  it("names each bad variable, all at once", () => {
    expect(
      problemsOf({
        PORT: "http",
        RETENTION_DAYS: "0",
        MAX_PARTICIPANTS: "1",
        SEND_BATCH_MAX: "2.5",
        DATABASE_URL: "mysql://x",
        REDIS_URL: "not a url",
        LOG_LEVEL: "loud",
        NODE_ID: "bad id",
        AUTH_SECRET: "short",
      }),
    ).toEqual([
      'PORT must be an integer from 0 to 65535, got "http"',
      "DATABASE_URL must be a postgres or postgresql URL",
      "REDIS_URL must be a redis or rediss URL, or redis+cluster://host:port,host:port,… (rediss+cluster with TLS)",
      "AUTH_SECRET must be at least 32 characters",
      'RETENTION_DAYS must be an integer from 1 to 9007199254740991, got "0"',
      'NODE_ID must match ^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$, got "bad id"',
      'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
      'MAX_PARTICIPANTS must be an integer from 2 to 101, the most the API allows ' +
        '(chat.proto CreateChatRequest.participant_user_ids max_items 100, plus the creator), got "1"',
      'SEND_BATCH_MAX must be an integer from 1 to 9007199254740991, got "2.5"',
    ]);
  });

  it("reads MAX_TOKEN_LIFETIME as palaver token --ttl does", () => {
    expect(loadConfig({ MAX_TOKEN_LIFETIME: "3600s" }).maxTokenLifetimeSeconds).toBe(3600);
    expect(loadConfig({ MAX_TOKEN_LIFETIME: "2w" }).maxTokenLifetimeSeconds).toBe(14 * 86_400);
    for (const text of ["0d", "30", "30 days", "-1h"]) {
      expect(problemsOf({ MAX_TOKEN_LIFETIME: text })).toEqual([
        `MAX_TOKEN_LIFETIME must be a span such as 30d, 12h, 90m, 3600s or 2w, got "${text}"`,
      ]);
    }
  });

  it("wants the S3 variables together", () => {
    expect(problemsOf({ S3_ENDPOINT: "http://s3:8333", S3_BUCKET: "media" })).toEqual([
      "S3_ENDPOINT, S3_BUCKET, S3_REGION, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY are set together or not at all; " +
        "missing S3_REGION, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY",
    ]);
  });

  it("wants both TLS files, readable", () => {
    expect(problemsOf({ TLS_CERT_FILE: "/nonexistent/cert.pem" })).toEqual([
      "TLS_CERT_FILE, TLS_KEY_FILE are set together or not at all; missing TLS_KEY_FILE",
    ]);
    expect(problemsOf({ TLS_CERT_FILE: "/nonexistent/cert.pem", TLS_KEY_FILE: "/nonexistent/key.pem" })).toEqual([
      "TLS_CERT_FILE names a file that cannot be read: /nonexistent/cert.pem",
      "TLS_KEY_FILE names a file that cannot be read: /nonexistent/key.pem",
    ]);
  });

  it("never echoes a secret", () => {
    const error = (() => {
      try {
        loadConfig({ AUTH_SECRET: "hunter2" });
      } catch (e) {
        return e as Error;
      }
    })();
    expect(error?.message).toContain("AUTH_SECRET");
    expect(error?.message).not.toContain("hunter2");
  });

  it("wants an hour's upload bytes to hold the largest attachment", () => {
    expect(problemsOf({ MAX_ATTACHMENT_BYTES: "1000", UPLOAD_BYTES_LIMIT_PER_HOUR: "999" })).toEqual([
      "UPLOAD_BYTES_LIMIT_PER_HOUR must be at least MAX_ATTACHMENT_BYTES (1000): the largest never fit",
    ]);
    expect(loadConfig({ MAX_ATTACHMENT_BYTES: "1000", UPLOAD_BYTES_LIMIT_PER_HOUR: "1000" }).limits.uploadBytesPerHour).toBe(1000);
  });

  it("caps MAX_PARTICIPANTS and MAX_ATTACHMENT_BYTES at what the proto's rules allow, naming the rule", () => {
    expect(loadConfig({ MAX_PARTICIPANTS: "101", MAX_ATTACHMENT_BYTES: "104857600" }).limits).toMatchObject({
      maxParticipants: 101,
      maxAttachmentBytes: 104857600,
    });
    expect(problemsOf({ MAX_PARTICIPANTS: "102", MAX_ATTACHMENT_BYTES: "104857601" })).toEqual([
      'MAX_PARTICIPANTS must be an integer from 2 to 101, the most the API allows ' +
        '(chat.proto CreateChatRequest.participant_user_ids max_items 100, plus the creator), got "102"',
      'MAX_ATTACHMENT_BYTES must be an integer from 1 to 104857600, the most the API allows ' +
        '(attachment.proto CreateAttachmentRequest.size_bytes lte 104857600), got "104857601"',
    ]);
  });
});

describe("the API's rules, read from the descriptors", () => {
  const validator = createValidator();
  const ids = (n: number) => Array.from({ length: n }, (_, i) => `user${i}`);

  it("are the limits protovalidate enforces", () => {
    const others = participantsRule.max - 1; // the creator is not in the list
    const chat = (n: number) =>
      validator.validate(CreateChatRequestSchema, create(CreateChatRequestSchema, { participantUserIds: ids(n) }));
    expect(chat(others).kind).toBe("valid");
    expect(chat(others + 1).kind).toBe("invalid");
    expect(chat(participantsRule.min - 2).kind).toBe("invalid");
    const upload = (sizeBytes: number) =>
      validator.validate(
        CreateAttachmentRequestSchema,
        create(CreateAttachmentRequestSchema, {
          sha256: new Uint8Array(32),
          sizeBytes: BigInt(sizeBytes),
          contentType: "image/png",
          fileName: "a.png",
        }),
      );
    expect(upload(attachmentBytesRule.max).kind).toBe("valid");
    expect(upload(attachmentBytesRule.max + 1).kind).toBe("invalid");
  });

  it("give server and web client one id pattern: chat.proto's, written the same on both of its fields", () => {
    const proto = stringPattern(ModifyChatParticipantsRequestSchema.field.userId);
    expect(stringPattern(CreateChatRequestSchema.field.participantUserIds)).toBe(proto);
    expect(idPattern.source).toBe(proto);
    expect(webIdPattern.source).toBe(proto);
  });

  it("give the browser's input pattern (v mode, anchored by the browser) the same ids", () => {
    const input = new RegExp(`^(?:${idInputPattern})$`, "v");
    const samples = ["alice", "a", "x".repeat(128), "x".repeat(129), "bob-", "b.o_b@x-y", "-bob", ".bob", "bad id", "", "é"];
    for (const id of samples) expect(input.test(id), id).toBe(idPattern.test(id));
    expect(samples.filter((id) => idPattern.test(id))).toEqual(["alice", "a", "x".repeat(128), "bob-", "b.o_b@x-y"]);
  });
});
