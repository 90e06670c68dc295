import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { createSecureServer, type Http2SecureServer, type Http2Session, type ServerHttp2Stream } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import { createSecureContext } from "node:tls";
import type { TlsConfig } from "./config.js";
import { ConfigError } from "./config-env.js";
import { applyKeepAliveTiming, KEEP_ALIVE_TIMEOUT_MS, type Listener } from "./node-listener.js";

/*
 * The listening server of a Node instance: plain HTTP/1.1, or with TLS_CERT_FILE and
 * TLS_KEY_FILE, HTTPS that speaks HTTP/2 and HTTP/1.1 (ALPN picks) from the one port.
 * HTTP/2 carries every stream of a page on one connection, where HTTP/1.1 browsers
 * allow six per origin. Both kinds keep their idle connections past the usual proxies'
 * upstream idle timeout (SPEC §4.8) and close them in order on a graceful stop.
 */

export interface NodeHttpServer {
  readonly scheme: "http" | "https";
  /** Listens on `host:port`; resolves with the port (the one chosen, for port 0). */
  listen(port: number, host: string): Promise<number>;
  /** Stops accepting connections; resolves once every one has closed. */
  close(): Promise<void>;
  /**
   * Closes what carries nothing now: idle HTTP/1.1 keep-alive connections at once, and
   * every HTTP/2 session with a GOAWAY, which closes it once its open streams have ended.
   */
  closeIdle(): void;
  /** Cuts every connection left. */
  cutAll(): void;
}

/** The certificate and key of TLS_CERT_FILE and TLS_KEY_FILE, read and checked. */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
}

/**
 * Plain HTTP without `tls`; HTTPS with HTTP/2 and HTTP/1.1 with it. An HTTP/2 connection
 * with no stream open for `idleMs` is closed (GOAWAY), as an idle HTTP/1.1 keep-alive
 * connection is after the same time.
 */
export function createNodeHttpServer(
  listener: Listener,
  tls: TlsMaterial | undefined,
  idleMs = KEEP_ALIVE_TIMEOUT_MS,
): NodeHttpServer {
  if (!tls) {
    const server = createServer(listener);
    applyKeepAliveTiming(server);
    return {
      scheme: "http",
      listen: (port, host) => listenOn(server, port, host),
      close: () => closeOf(server),
      closeIdle: () => server.closeIdleConnections(),
      cutAll: () => server.closeAllConnections(),
    };
  }
  const server = createSecureServer({ cert: tls.cert, key: tls.key, allowHTTP1: true }, listener);
  // HTTP/1.1 connections of an HTTP/2 server go through node:http's connection handling,
  // which reads keepAliveTimeout and headersTimeout from the server object (lib/_http_server.js);
  // node:http2's types do not declare them.
  applyKeepAliveTiming(server as unknown as Server);
  // Each session with its open streams, counted here rather than with node:http2's socket
  // timeout, which would also close a session whose only stream is quiet between
  // heartbeats longer than idleMs.
  const sessions = new Map<Http2Session, { streams: number; idle: ReturnType<typeof setTimeout> | null }>();
  const sockets = new Set<Socket>();
  const armIdle = (session: Http2Session) => {
    const entry = sessions.get(session);
    if (!entry || entry.streams > 0 || session.closed) return;
    entry.idle = setTimeout(() => session.close(), idleMs);
    entry.idle.unref();
  };
  server.on("session", (session: Http2Session) => {
    sessions.set(session, { streams: 0, idle: null });
    armIdle(session);
    session.once("close", () => {
      const idle = sessions.get(session)?.idle;
      if (idle) clearTimeout(idle);
      sessions.delete(session);
    });
  });
  server.on("stream", (stream: ServerHttp2Stream) => {
    const session = stream.session;
    const entry = session && sessions.get(session);
    if (!session || !entry) return;
    entry.streams += 1;
    if (entry.idle) clearTimeout(entry.idle);
    entry.idle = null;
    stream.once("close", () => {
      entry.streams -= 1;
      armIdle(session);
    });
  });
  server.on("secureConnection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  return {
    scheme: "https",
    listen: (port, host) => listenOn(server, port, host),
    close: () => closeOf(server),
    closeIdle() {
      // Its HTTP/1.1 connections are tracked as node:http's are (undeclared in node:http2's types).
      (server as unknown as Server).closeIdleConnections();
      for (const session of sessions.keys()) if (!session.closed) session.close();
    },
    cutAll() {
      for (const session of sessions.keys()) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
  };
}

/**
 * Reads the certificate and key before anything else starts: a file that cannot be read
 * or used stops start-up with a ConfigError naming its variable.
 */
export async function readTlsMaterial(tls: TlsConfig | undefined): Promise<TlsMaterial | undefined> {
  if (!tls) return undefined;
  const read = (file: string, name: string) =>
    readFile(file).catch((err: unknown) => {
      throw new ConfigError(name, `cannot be read (${file}): ${err instanceof Error ? err.message : String(err)}`);
    });
  const [cert, key] = await Promise.all([read(tls.certFile, "TLS_CERT_FILE"), read(tls.keyFile, "TLS_KEY_FILE")]);
  try {
    // Checked here rather than at the first handshake, where the error would reach no operator.
    createSecureContext({ cert, key });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new ConfigError("TLS_CERT_FILE", `is not a certificate that TLS_KEY_FILE's private key fits, in PEM: ${why}`);
  }
  return { cert, key };
}

function listenOn(server: Server | Http2SecureServer, port: number, host: string): Promise<number> {
  const port$ = listening(server);
  server.listen(port, host);
  return port$;
}

/** Resolves with the port once `server` listens; rejects with the error that stops it. */
export function listening(server: Server | Http2SecureServer): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.once("listening", () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeOf(server: Server | Http2SecureServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
  });
}
