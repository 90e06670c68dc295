import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { dataNodeArgs, HOST, launchRedis, parseInfo, queryNode, type RedisProcess } from "./redis-process.js";
import { waitUntil } from "./server.js";

/*
 * A Redis Cluster of private redis-server processes: three masters covering all 16384
 * slots, each with `replicas` replicas. With replicas, a short node timeout lets a killed
 * master's replica take over within a few seconds.
 */

const execFileAsync = promisify(execFile);
const MASTERS = 3;
const SETTLE_TIMEOUT_MS = 30_000;
const FAILOVER_TIMEOUT_MS = 20_000;
/** Flags a reachable, fully joined node never carries in anyone's `CLUSTER NODES`. */
const UNHEALTHY_FLAGS = ["fail", "fail?", "handshake", "noaddr"];

/** One node as the cluster sees it. */
export interface RedisClusterNode {
  readonly host: string;
  readonly port: number;
  readonly id: string;
  readonly role: "master" | "replica";
  /** The port of the master a replica follows; null for a master. */
  readonly masterPort: number | null;
  /** The slot ranges a master serves, `[first, last]`. */
  readonly slots: readonly (readonly [number, number])[];
  /** Flagged `fail` by the node that was asked (it is down). */
  readonly failed: boolean;
}

export interface StartRedisClusterOptions {
  /** Replicas per master (default 0). */
  readonly replicas?: number;
  /** `cluster-node-timeout`: how long a node may be unreachable before it fails over (default 1 s with replicas, else 5 s). */
  readonly nodeTimeoutMs?: number;
}

export interface RedisCluster {
  /** Every node, as startup nodes for a client: `new Cluster(cluster.nodes, …)`. */
  readonly nodes: { host: string; port: number }[];
  /** Every node as a live node's `CLUSTER NODES` shows it now, by port. */
  topology(): Promise<RedisClusterNode[]>;
  /** The master that serves `key`'s slot now (`CLUSTER KEYSLOT` + `CLUSTER SLOTS` on a live node). */
  masterFor(key: string): Promise<{ host: string; port: number; slot: number }>;
  /** Ends one node with `signal` (default SIGKILL: a crash) and resolves once it exited. */
  kill(port: number, signal?: NodeJS.Signals): Promise<void>;
  /**
   * Resolves with the replica promoted in place of the master killed on `deadPort`, once
   * every live node agrees on it and reports `cluster_state:ok`.
   */
  waitForFailover(deadPort: number, timeoutMs?: number): Promise<RedisClusterNode>;
  /**
   * Starts a killed node again with its nodes.conf; resolves with it once it rejoined (a
   * former master as a replica of its successor) and its replication link is up.
   */
  restart(port: number): Promise<RedisClusterNode>;
  /** Stops every node and removes their directories. */
  stop(): Promise<void>;
}

/**
 * Starts `3 × (1 + replicas)` cluster-enabled redis-servers, creates the cluster with
 * `redis-cli --cluster create`, and resolves once every node reports `cluster_state:ok`
 * with all slots covered and sees the same topology, and every replica's link to its
 * master is up.
 * @example const cluster = await startRedisCluster({ replicas: 1 }); await cluster.kill((await cluster.masterFor("k")).port);
 */
export async function startRedisCluster(opts: StartRedisClusterOptions = {}): Promise<RedisCluster> {
  const replicas = opts.replicas ?? 0;
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? (replicas > 0 ? 1_000 : 5_000);
  const clusterArgs = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];
  const launched = await Promise.allSettled(
    Array.from({ length: MASTERS * (1 + replicas) }, () =>
      launchRedis({
        argv: (port, dir) => dataNodeArgs(port, dir, [...clusterArgs, "--cluster-node-timeout", String(nodeTimeoutMs)]),
        busOffset: 10_000,
      }),
    ),
  );
  const processes = launched.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const stop = async () => {
    await Promise.allSettled(processes.map((p) => p.remove()));
  };
  try {
    const failed = launched.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    await execFileAsync(
      "redis-cli",
      [
        "--cluster",
        "create",
        ...processes.map((p) => `${HOST}:${p.port}`),
        "--cluster-replicas",
        String(replicas),
        "--cluster-yes",
      ],
      { timeout: 30_000 },
    );
    await settle(processes, SETTLE_TIMEOUT_MS, "the new cluster");
  } catch (err) {
    await stop();
    throw err;
  }

  const byPort = (port: number): RedisProcess => {
    const found = processes.find((p) => p.port === port);
    if (!found) throw new Error(`no cluster node on port ${port}`);
    return found;
  };
  /** A slot each killed master served, to tell its successor by. */
  const slotOfKilled = new Map<number, number>();
  const topology = async (): Promise<RedisClusterNode[]> => {
    for (const p of processes.filter((n) => n.isRunning)) {
      const replies = await queryNode(p.port, [["CLUSTER", "NODES"]]);
      if (replies) return parseClusterNodes(String(replies[0]));
    }
    throw new Error("no cluster node answers");
  };
  return {
    nodes: processes.map((p) => ({ host: HOST, port: p.port })),
    topology,
    async masterFor(key) {
      for (const p of processes.filter((n) => n.isRunning)) {
        const replies = await queryNode(p.port, [
          ["CLUSTER", "KEYSLOT", key],
          ["CLUSTER", "SLOTS"],
        ]);
        if (!replies) continue;
        const slot = Number(replies[0]);
        const range = (replies[1] as [number, number, [string, number]][]).find(([a, b]) => a <= slot && slot <= b);
        if (range) return { host: range[2][0], port: Number(range[2][1]), slot };
      }
      throw new Error(`no live node knows which master serves ${key}`);
    },
    async kill(port, signal = "SIGKILL") {
      const node = byPort(port);
      const first = (await topology()).find((n) => n.port === port)?.slots[0];
      if (first) slotOfKilled.set(port, first[0]);
      await node.kill(signal);
    },
    async waitForFailover(deadPort, timeoutMs = FAILOVER_TIMEOUT_MS) {
      const slot = slotOfKilled.get(deadPort);
      if (slot === undefined || byPort(deadPort).isRunning) {
        throw new Error(`the node on ${deadPort} is not a master killed through this handle`);
      }
      const nodes = await settle(processes, timeoutMs, `the failover of ${deadPort}`);
      const promoted = nodes.find((n) => n.role === "master" && n.slots.some(([a, b]) => a <= slot && slot <= b));
      if (!promoted || promoted.port === deadPort) throw new Error(`slot ${slot} was not taken over`);
      return promoted;
    },
    async restart(port) {
      await byPort(port).start();
      slotOfKilled.delete(port);
      const nodes = await settle(processes, SETTLE_TIMEOUT_MS, `node ${port} to rejoin`);
      const node = nodes.find((n) => n.port === port);
      if (!node) throw new Error(`node ${port} is not in the cluster`);
      return node;
    },
    stop,
  };
}

interface NodeView {
  readonly port: number;
  readonly info: Map<string, string>;
  readonly replication: Map<string, string>;
  readonly nodes: readonly (RedisClusterNode & { readonly flags: readonly string[] })[];
}

/**
 * Waits until the cluster is at rest: every running node answers, reports
 * `cluster_state:ok` with all slots covered, knows every node, and sees the same roles
 * and slots as the others; nodes that are down are flagged `fail` and serve no slot;
 * every running replica's link to its master is up. Resolves with that topology.
 */
async function settle(processes: readonly RedisProcess[], timeoutMs: number, what: string) {
  const check = async (): Promise<RedisClusterNode[] | null> => {
    const running = new Set(processes.filter((p) => p.isRunning).map((p) => p.port));
    const views = await Promise.all([...running].map((port) => viewOf(port)));
    const signatures = new Set<string>();
    for (const view of views) {
      if (!view) return null;
      if (view.info.get("cluster_state") !== "ok" || view.info.get("cluster_slots_ok") !== "16384") return null;
      if (view.info.get("cluster_known_nodes") !== String(processes.length)) return null;
      for (const n of view.nodes) {
        const healthy = !n.flags.some((f) => UNHEALTHY_FLAGS.includes(f));
        if (running.has(n.port) ? !healthy : !n.failed || n.slots.length > 0) return null;
      }
      if (view.nodes.some((n) => n.port === view.port && n.role === "replica")) {
        const self = view.nodes.find((n) => n.port === view.port);
        if (view.replication.get("master_link_status") !== "up") return null;
        if (view.replication.get("master_port") !== String(self?.masterPort)) return null;
      }
      signatures.add(signatureOf(view.nodes.filter((n) => running.has(n.port))));
    }
    return signatures.size === 1 && views[0] ? views[0].nodes.map(({ flags: _, ...node }) => node) : null;
  };
  return waitUntil(check, timeoutMs, `${what} to settle`, 100);
}

async function viewOf(port: number): Promise<NodeView | null> {
  const replies = await queryNode(port, [
    ["CLUSTER", "INFO"],
    ["CLUSTER", "NODES"],
    ["INFO", "replication"],
  ]);
  if (!replies) return null;
  const [info, nodes, replication] = replies;
  return { port, info: parseInfo(info), nodes: parseClusterNodes(String(nodes)), replication: parseInfo(replication) };
}

function signatureOf(nodes: readonly RedisClusterNode[]): string {
  return nodes
    .map((n) => `${n.port}:${n.role}:${n.masterPort}:${n.slots.map((r) => r.join("-")).join(",")}`)
    .sort()
    .join(" ");
}

/**
 * Parses `CLUSTER NODES`: `<id> <ip:port@bus[,hostname]> <flags> <master id|-> <ping>
 * <pong> <epoch> <link> <slot ranges…>`; slots being migrated (`[…]`) are left out.
 */
function parseClusterNodes(text: string): (RedisClusterNode & { readonly flags: readonly string[] })[] {
  const rows = text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      const [id = "", address = "", flags = "", masterId = "-", , , , , ...slots] = line.trim().split(" ");
      const hostPort = address.split("@")[0] ?? "";
      const colon = hostPort.lastIndexOf(":");
      return { id, host: hostPort.slice(0, colon), port: Number(hostPort.slice(colon + 1)), flags, masterId, slots };
    });
  const portOf = new Map(rows.map((r) => [r.id, r.port]));
  return rows
    .map((r) => {
      const flags = r.flags.split(",");
      const replica = flags.includes("slave");
      return {
        host: r.host,
        port: r.port,
        id: r.id,
        role: replica ? ("replica" as const) : ("master" as const),
        masterPort: replica ? (portOf.get(r.masterId) ?? null) : null,
        slots: r.slots
          .filter((s) => !s.startsWith("["))
          .map((s) => {
            const [first, last = first] = s.split("-").map(Number);
            return [first ?? 0, last ?? 0] as const;
          }),
        failed: flags.includes("fail"),
        flags,
      };
    })
    .sort((a, b) => a.port - b.port);
}
