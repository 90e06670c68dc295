import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { Webhook } from "standardwebhooks";

/*
 * The app's backend as the README tells one to write it: an HTTP endpoint that
 * verifies every delivery with the `standardwebhooks` package — an implementation of
 * Standard Webhooks that is not bindwatch's — and records what it got. What it answers
 * is scripted: a queue of behaviours, one per request, then `thereafter`.
 */

export type ReceiverBehaviour =
  | { readonly kind: "ok" }
  | { readonly kind: "status"; readonly status: number }
  /** Never answers (until the client gives up). */
  | { readonly kind: "hang" }
  | { readonly kind: "redirect"; readonly location: string };

export interface ReceivedDelivery {
  readonly id: string;
  readonly timestamp: number;
  /** Whether the signature verified (with the standardwebhooks package). */
  readonly verified: boolean;
  readonly verifyError?: string;
  readonly payload: { type?: string; timestamp?: string; data?: Record<string, unknown> } | null;
  /** When it arrived, this process's clock. */
  readonly at: number;
  readonly path: string;
  /** What the receiver answered (null: it hung). */
  readonly answered: number | null;
  /** The three Standard Webhooks headers as sent. */
  readonly headers: Readonly<Record<"webhook-id" | "webhook-timestamp" | "webhook-signature", string>>;
  /** The body as sent. */
  readonly body: string;
}

export interface WebhookReceiver {
  readonly url: string;
  readonly port: number;
  /** Every request, in order, whatever it was answered. */
  readonly received: ReceivedDelivery[];
  /** Those answered 2xx. */
  delivered(): ReceivedDelivery[];
  /** Queues behaviours for the next requests. */
  script(...behaviours: ReceiverBehaviour[]): void;
  /** What every request gets once the queue is empty (default ok). */
  thereafter(behaviour: ReceiverBehaviour): void;
  /** Stops listening: connections are refused until `up()`. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      text += chunk;
    });
    req.on("end", () => resolve(text));
    req.on("error", reject);
  });
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * A webhook receiver on a loopback port that verifies with `secret` (`whsec_…`).
 * @example const receiver = await startWebhookReceiver(secret); … receiver.delivered()
 */
export async function startWebhookReceiver(secret: string): Promise<WebhookReceiver> {
  const verifier = new Webhook(secret);
  const received: ReceivedDelivery[] = [];
  const queue: ReceiverBehaviour[] = [];
  let fallback: ReceiverBehaviour = { kind: "ok" };
  const sockets = new Set<Socket>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req);
    const headers = {
      "webhook-id": String(req.headers["webhook-id"] ?? ""),
      "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
      "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
    };
    let verified = false;
    let verifyError: string | undefined;
    let payload: ReceivedDelivery["payload"] = null;
    try {
      payload = verifier.verify(body, headers) as ReceivedDelivery["payload"];
      verified = true;
    } catch (err) {
      verifyError = err instanceof Error ? err.message : String(err);
    }
    const behaviour = queue.shift() ?? fallback;
    const answered =
      behaviour.kind === "ok"
        ? 200
        : behaviour.kind === "status"
          ? behaviour.status
          : behaviour.kind === "redirect"
            ? 302
            : null;
    received.push({
      id: headers["webhook-id"],
      timestamp: Number(headers["webhook-timestamp"]),
      verified,
      ...(verifyError === undefined ? {} : { verifyError }),
      payload,
      at: Date.now(),
      path: req.url ?? "",
      answered,
      headers,
      body,
    });
    if (behaviour.kind === "hang") return;
    if (behaviour.kind === "redirect") res.writeHead(302, { location: behaviour.location });
    else res.writeHead(answered ?? 500, { "content-type": "application/json" });
    res.end(answered !== null && answered < 300 ? '{"ok":true}' : "");
  };

  let server = createServer((req, res) => void handle(req, res));
  const track = (s: Server) =>
    s.on("connection", (socket: Socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    });
  track(server);
  const port = await listen(server, 0);
  const stopServer = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });

  return {
    url: `http://127.0.0.1:${port}/webhooks`,
    port,
    received,
    delivered: () => received.filter((r) => r.answered !== null && r.answered >= 200 && r.answered < 300),
    script(...behaviours) {
      queue.push(...behaviours);
    },
    thereafter(behaviour) {
      fallback = behaviour;
    },
    down: stopServer,
    async up() {
      server = createServer((req, res) => void handle(req, res));
      track(server);
      await listen(server, port);
    },
    close: stopServer,
  };
}
