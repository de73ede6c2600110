import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

/** Every way a client reaches the one port: gRPC and Connect over h2c, Connect and gRPC-Web over HTTP/1.1. */
export const wireProtocols = ["grpc over h2c", "connect over h2c", "connect over http/1.1", "grpc-web over http/1.1"] as const;
export type WireProtocol = (typeof wireProtocols)[number];

/** A transport speaking one wire protocol to baseUrl, sending the bearer token when one is given. */
export function transportFor(protocol: WireProtocol, baseUrl: string, token?: string): Transport {
  const options = { baseUrl, interceptors: token === undefined ? [] : [bearer(token)] };
  switch (protocol) {
    case "grpc over h2c":
      return createGrpcTransport(options);
    case "connect over h2c":
      return createConnectTransport({ ...options, httpVersion: "2" });
    case "connect over http/1.1":
      return createConnectTransport({ ...options, httpVersion: "1.1" });
    case "grpc-web over http/1.1":
      return createGrpcWebTransport({ ...options, httpVersion: "1.1" });
  }
}

export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
