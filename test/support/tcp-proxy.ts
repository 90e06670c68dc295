import { createConnection, createServer, type Socket } from "node:net";

/*
 * A loopback TCP proxy in front of one server, to cut a client off the way a network
 * does: a black hole (the peer hangs; nothing is closed) or a reset of every connection.
 */

const HOST = "127.0.0.1";

export interface TcpProxy {
  readonly host: string;
  /** The port clients connect to instead of the target's. */
  readonly port: number;
  /** Open client connections. */
  readonly connections: number;
  /**
   * Stops forwarding in both directions on every connection, present and future, without
   * closing any: the proxy stops reading, so bytes wait in socket buffers and a client
   * sees a peer that hangs (its commands time out; no close, no reset). A connection
   * opened meanwhile is accepted and hangs the same way.
   */
  blackhole(): void;
  /**
   * Forwards again. What was sent during the black hole is delivered late, in order, as
   * TCP does after a short partition heals — a late write can still land.
   */
  heal(): void;
  /** Resets every open connection (RST both ways): clients see an abrupt close. New connections work. */
  cutAll(): void;
  /** Closes the listener and resets every connection. */
  stop(): Promise<void>;
}

/**
 * Forwards one direction of one connection, `from` to `to`, reading only while not held
 * and while `to` is not full; returns the function that applies a change of `isHeld`.
 */
function forward(from: Socket, to: Socket, isHeld: () => boolean): () => void {
  let waitingForDrain = false;
  const update = () => {
    if (isHeld() || waitingForDrain) from.pause();
    else from.resume();
  };
  from.on("data", (chunk: Buffer) => {
    if (to.write(chunk)) return;
    waitingForDrain = true;
    from.pause();
    to.once("drain", () => {
      waitingForDrain = false;
      update();
    });
  });
  // A half-close travels on (`end` only comes once everything before it was forwarded).
  from.on("end", () => to.end());
  return update;
}

interface Link {
  readonly client: Socket;
  readonly upstream: Socket;
  /** Re-apply the black hole to both directions. */
  readonly updates: readonly (() => void)[];
}

/**
 * Listens on a free loopback port and forwards every connection to `targetHost:targetPort`.
 * @example const proxy = await startTcpProxy("127.0.0.1", redis.port); proxy.blackhole(); …; proxy.heal();
 */
export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const links = new Set<Link>();
  let held = false;
  const isHeld = () => held;
  const reset = (link: Link) => {
    links.delete(link);
    link.client.resetAndDestroy();
    link.upstream.resetAndDestroy();
  };
  const server = createServer((client) => {
    const upstream = createConnection({ host: targetHost, port: targetPort });
    const link: Link = {
      client,
      upstream,
      updates: [forward(client, upstream, isHeld), forward(upstream, client, isHeld)],
    };
    links.add(link);
    for (const update of link.updates) update();
    // An error or a reset on one side resets the other; a clean close ends when both sides did.
    for (const socket of [client, upstream]) {
      socket.on("error", () => reset(link));
      socket.on("close", () => {
        if (client.destroyed && upstream.destroyed) links.delete(link);
      });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, HOST, () => resolve());
  });
  const address = server.address();
  if (typeof address !== "object" || !address) throw new Error("the proxy has no address");
  const setHeld = (value: boolean) => {
    held = value;
    for (const link of links) for (const update of link.updates) update();
  };
  const cutAll = () => {
    for (const link of [...links]) reset(link);
  };
  return {
    host: HOST,
    port: address.port,
    get connections() {
      return links.size;
    },
    blackhole: () => setHeld(true),
    heal: () => setHeld(false),
    cutAll,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      cutAll();
      await closed;
    },
  };
}
