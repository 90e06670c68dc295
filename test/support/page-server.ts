import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface PageServer {
  /** Origins serving the same page, e.g. one allowed by CORS_ORIGINS and one not. */
  readonly origins: readonly string[];
  close(): Promise<void>;
}

/**
 * Serves `pages` (path → HTML) on `count` loopback ports, one origin each: an app's pages
 * on origins other than bindwatch's.
 * @example const pages = await startPageServer(1, { "/watch.html": WATCH_PAGE });
 */
export async function startPageServer(count: number, pages: Readonly<Record<string, string>>): Promise<PageServer> {
  const servers: Server[] = [];
  const origins: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const server = createServer((req, res) => {
      const page = pages[new URL(req.url ?? "/", "http://page.test").pathname];
      if (page !== undefined) {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
        res.end(page);
      } else {
        res.writeHead(req.url === "/favicon.ico" ? 204 : 404);
        res.end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    servers.push(server);
    origins.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  }
  return {
    origins,
    async close() {
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              server.close(() => resolve());
              server.closeAllConnections();
            }),
        ),
      );
    },
  };
}
