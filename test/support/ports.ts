import { createServer } from "node:net";

const HOST = "127.0.0.1";

/**
 * A loopback port nobody listens on right now (the OS picks it); with `alsoFreeOffset`,
 * `port + offset` must be free too (a Redis Cluster node's bus port is port + 10000).
 * For servers that cannot listen on port 0 and report it (redis-server, nginx): the port
 * may be taken again before they bind it, so their starters retry on another one.
 */
export async function findFreePort(alsoFreeOffset?: number): Promise<number> {
  for (let i = 0; i < 50; i += 1) {
    const port = await listenOnce(0);
    if (alsoFreeOffset === undefined) return port;
    if (port + alsoFreeOffset <= 65_535 && (await isFree(port + alsoFreeOffset))) return port;
  }
  throw new Error("no free port found");
}

function listenOnce(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, HOST, () => {
      const address = server.address();
      const bound = typeof address === "object" && address ? address.port : port;
      server.close(() => resolve(bound));
    });
  });
}

async function isFree(port: number): Promise<boolean> {
  try {
    await listenOnce(port);
    return true;
  } catch {
    return false;
  }
}
