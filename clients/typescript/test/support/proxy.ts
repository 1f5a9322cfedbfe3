import { createServer, type IncomingMessage, request as httpRequest, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  upstream?: IncomingMessage;
  stalled: boolean;
}

/**
 * An HTTP proxy in front of the server that a test can break: drop every open connection (the
 * socket is destroyed mid-stream), close the responses cleanly (as the server does when a token
 * expires), or stall them (the socket stays open, nothing more is forwarded).
 */
export interface BreakableProxy {
  baseUrl: string;
  /** Every request's headers, in order. */
  requests: { url: string; headers: IncomingMessage["headers"]; at: number }[];
  /** Destroys every open client connection. */
  drop(): void;
  /** Ends every open response as if the server had finished it. */
  endCleanly(): void;
  /** Stops forwarding on every open response; sockets stay open. */
  stall(): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<BreakableProxy> {
  const upstreamUrl = new URL(target);
  const open = new Set<Exchange>();
  const requests: BreakableProxy["requests"] = [];
  const server = createServer((req, res) => {
    requests.push({ url: req.url ?? "", headers: req.headers, at: Date.now() });
    const exchange: Exchange = { req, res, stalled: false };
    open.add(exchange);
    const forget = () => open.delete(exchange);
    res.on("close", forget);
    const upstreamReq = httpRequest(
      {
        host: upstreamUrl.hostname,
        port: upstreamUrl.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: upstreamUrl.host },
      },
      (upstream) => {
        exchange.upstream = upstream;
        res.writeHead(upstream.statusCode ?? 502, upstream.headers);
        res.flushHeaders();
        upstream.on("data", (chunk: Buffer) => {
          if (!exchange.stalled && !res.destroyed) res.write(chunk);
        });
        upstream.on("end", () => {
          if (!exchange.stalled && !res.destroyed) res.end();
        });
        upstream.on("error", () => res.destroy());
      },
    );
    upstreamReq.on("error", () => res.destroy());
    req.pipe(upstreamReq);
    res.on("close", () => upstreamReq.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    drop() {
      for (const e of open) {
        e.upstream?.destroy();
        e.res.socket?.destroy();
      }
    },
    endCleanly() {
      for (const e of open) {
        e.stalled = true;
        e.upstream?.destroy();
        e.res.end();
      }
    },
    stall() {
      for (const e of open) e.stalled = true;
    },
    async close() {
      for (const e of open) e.res.socket?.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
