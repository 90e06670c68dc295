import { createConnection } from "node:net";

/* Readings of a bench Redis over a socket of their own (not through any client under test). */

/** One command's raw reply over a socket of its own. */
function rawCommand(port: number, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    let reply = "";
    const timer = setTimeout(() => socket.destroy(new Error("timeout")), 5_000);
    socket.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on("data", (chunk) => {
      reply += chunk.toString("utf8");
      const header = reply.indexOf("\r\n");
      if (header > 0 && Buffer.byteLength(reply) >= header + 2 + Number(reply.slice(1, header)) + 2) {
        clearTimeout(timer);
        socket.end();
        resolve(reply);
      }
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
  });
}

/** Calls of each command so far (INFO commandstats: the commands inside scripts count too). */
export async function commandStats(port: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const m of (await rawCommand(port, ["INFO", "commandstats"])).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    counts[m[1] ?? ""] = Number(m[2]);
  }
  return counts;
}
