import { once } from "node:events";
import { createServer, type Socket } from "node:net";

/**
 * A stand-in for one Redis Sentinel, speaking just enough RESP for ioredis's Sentinel
 * client: it names a master, can hold its answer back, and publishes `+switch-master`
 * to the clients subscribed to it when told. A real sentinel cannot be made to answer
 * slowly or announce a failover at a chosen moment, which is what a test of a race
 * between the two needs.
 */
export interface FakeSentinel {
  readonly port: number;
  /** Where `SENTINEL GET-MASTER-ADDR-BY-NAME` points. */
  master: { host: string; port: number };
  /** How long that answer is held back, in ms. */
  answerDelayMs: number;
  /** Resolves when the next master question arrives (before it is answered). */
  nextQuestion(): Promise<void>;
  /** Connections subscribed to `+switch-master`. */
  subscribers(): number;
  /** Publishes a `+switch-master` to every subscriber. */
  switchMaster(name: string): void;
  stop(): Promise<void>;
}

const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
const array = (items: readonly string[]) => `*${items.length}\r\n${items.join("")}`;

/**
 * The commands in `buffer` (RESP arrays of bulk strings, as ioredis sends them) and the
 * bytes left over, an incomplete command.
 */
function parseCommands(buffer: Buffer): { commands: string[][]; rest: Buffer } {
  const commands: string[][] = [];
  let at = 0;
  for (;;) {
    const start = at;
    const header = buffer.indexOf("\r\n", at);
    if (header < 0 || buffer[at] !== 0x2a /* * */) return { commands, rest: buffer.subarray(start) };
    const count = Number(buffer.toString("latin1", at + 1, header));
    at = header + 2;
    const args: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const lengthEnd = buffer.indexOf("\r\n", at);
      if (lengthEnd < 0) return { commands, rest: buffer.subarray(start) };
      const length = Number(buffer.toString("latin1", at + 1, lengthEnd));
      if (lengthEnd + 2 + length + 2 > buffer.length) return { commands, rest: buffer.subarray(start) };
      args.push(buffer.toString("utf8", lengthEnd + 2, lengthEnd + 2 + length));
      at = lengthEnd + 2 + length + 2;
    }
    commands.push(args);
  }
}

export async function startFakeSentinel(master: { host: string; port: number }): Promise<FakeSentinel> {
  const subscribed = new Set<Socket>();
  const sockets = new Set<Socket>();
  let questionWaiters: (() => void)[] = [];

  const answer = (socket: Socket, args: readonly string[]): void => {
    const [command = "", sub = ""] = args.map((a) => a.toLowerCase());
    if (command === "sentinel" && sub === "get-master-addr-by-name") {
      for (const wake of questionWaiters) wake();
      questionWaiters = [];
      const reply = array([bulk(fake.master.host), bulk(String(fake.master.port))]);
      setTimeout(() => {
        if (!socket.destroyed) socket.write(reply);
      }, fake.answerDelayMs);
    } else if (command === "sentinel" && sub === "sentinels") {
      socket.write("*0\r\n");
    } else if (command === "subscribe") {
      subscribed.add(socket);
      socket.write(array([bulk("subscribe"), bulk(args[1] ?? ""), ":1\r\n"]));
    } else {
      socket.write("+OK\r\n");
    }
  };

  const server = createServer((socket) => {
    sockets.add(socket);
    let pending: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      const { commands, rest } = parseCommands(Buffer.concat([pending, chunk]));
      pending = rest;
      for (const args of commands) answer(socket, args);
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      sockets.delete(socket);
      subscribed.delete(socket);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");

  const fake: FakeSentinel = {
    port: address.port,
    master,
    answerDelayMs: 0,
    nextQuestion: () => new Promise<void>((resolve) => questionWaiters.push(resolve)),
    subscribers: () => subscribed.size,
    switchMaster(name) {
      const payload = `${name} ${fake.master.host} ${fake.master.port} ${fake.master.host} ${fake.master.port}`;
      for (const socket of subscribed) {
        socket.write(array([bulk("message"), bulk("+switch-master"), bulk(payload)]));
      }
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
  return fake;
}
