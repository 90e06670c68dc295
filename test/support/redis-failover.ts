import { Redis } from "ioredis";
import { afterAll, beforeAll } from "vitest";
import { type Deployment, type DeploymentOptions, startDeployment, type Watcher } from "./cluster.js";
import { startRedisCluster } from "./redis-cluster.js";
import { startRedisSentinel } from "./redis-sentinel.js";

/*
 * The two Redis topologies a master can die in (SPEC §4.9), started for a deployment, and a
 * failover whose promoted replica lacks the master's last writes, as asynchronous
 * replication allows.
 */

/** How long the master writes alone before it dies, when the test has nothing of its own to write then. */
const LAG_MS = 500;

export interface FailoverStore {
  /** REDIS_CLUSTER_NODES or REDIS_SENTINELS… for the instances. */
  readonly storeEnv: Record<string, string>;
  /**
   * Cuts the replica of the master holding `traceId`'s keys off (see withLaggingReplica),
   * runs `meanwhile` — whatever it makes the instances write, the replica never gets —
   * then kills that master (-9), and resolves once a replica has taken over.
   */
  failOver(traceId: string, meanwhile?: () => Promise<void>): Promise<void>;
  /** Resolves once the replica of the master holding `traceId`'s keys has all it was sent (WAIT). */
  replicated(traceId: string): Promise<void>;
  /** The port of the master that holds `traceId`'s keys now. */
  masterOf(traceId: string): Promise<number>;
  /** The data nodes' password, if they have one. */
  readonly password: string | undefined;
  stop(): Promise<void>;
}

export interface FailoverTopology {
  readonly name: string;
  start(): Promise<FailoverStore>;
}

const SENTINEL_PASSWORD = "sentinel-data-password";

export const FAILOVER_TOPOLOGIES: readonly FailoverTopology[] = [
  {
    name: "Redis Cluster, 3 masters with a replica each",
    async start() {
      const cluster = await startRedisCluster({ replicas: 1 });
      return {
        storeEnv: { REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(",") },
        async failOver(traceId, meanwhile) {
          const master = await cluster.masterFor(`bw:{${traceId}}:state`);
          const replica = (await cluster.topology()).find((n) => n.role === "replica" && n.masterPort === master.port);
          if (!replica) throw new Error(`no replica of ${master.port}`);
          await withLaggingReplica({ master: master.port, replica: replica.port }, meanwhile, () =>
            cluster.kill(master.port),
          );
          await cluster.waitForFailover(master.port);
        },
        async replicated(traceId) {
          await waitForReplication((await cluster.masterFor(`bw:{${traceId}}:state`)).port);
        },
        masterOf: async (traceId) => (await cluster.masterFor(`bw:{${traceId}}:state`)).port,
        password: undefined,
        stop: () => cluster.stop(),
      };
    },
  },
  {
    name: "Sentinel, a master, a replica and 3 sentinels",
    async start() {
      const deployment = await startRedisSentinel({ password: SENTINEL_PASSWORD });
      return {
        storeEnv: deployment.env,
        async failOver(_traceId, meanwhile) {
          const master = await deployment.masterAddress();
          const replica = deployment.dataPorts.find((port) => port !== master.port);
          if (replica === undefined) throw new Error("no replica");
          await withLaggingReplica(
            { master: master.port, replica, password: SENTINEL_PASSWORD },
            meanwhile,
            async () => {
              await deployment.killMaster();
            },
          );
          await deployment.waitForFailover();
        },
        async replicated() {
          await waitForReplication((await deployment.masterAddress()).port, SENTINEL_PASSWORD);
        },
        masterOf: async () => (await deployment.masterAddress()).port,
        password: SENTINEL_PASSWORD,
        stop: () => deployment.stop(),
      };
    },
  },
];

/**
 * Starts `topology` and a deployment of instances on it before the suite's tests, and
 * stops both (closing `opts.watchers` first) after them.
 */
export function useFailoverDeployment(
  topology: FailoverTopology,
  opts: DeploymentOptions & { readonly watchers: Watcher[] },
  onStarted: (store: FailoverStore, deployment: Deployment) => void,
): void {
  let store: FailoverStore | undefined;
  let deployment: Deployment | undefined;
  beforeAll(async () => {
    store = await topology.start();
    deployment = await startDeployment({ ...opts, storeEnv: store.storeEnv });
    onStarted(store, deployment);
  }, 120_000);
  afterAll(async () => {
    await deployment?.stop(opts.watchers.splice(0));
    await store?.stop();
  });
}

/** A plain connection to one data node (not following failovers): the caller disconnects it. */
export function connectTo(port: number, password?: string): Redis {
  const client = new Redis({
    host: "127.0.0.1",
    port,
    ...(password ? { password } : {}),
    lazyConnect: true,
    maxRetriesPerRequest: 0,
  });
  client.on("error", () => {});
  return client;
}

/** Waits until the master on `port` has its one replica's acknowledgement of every write so far. */
async function waitForReplication(port: number, password?: string): Promise<void> {
  const master = connectTo(port, password);
  try {
    await master.connect();
    const acked = await master.call("WAIT", "1", "5000");
    if (acked !== 1) throw new Error(`the master on ${port} has ${String(acked)} replicas acknowledging, not 1`);
  } finally {
    master.disconnect();
  }
}

/**
 * Stops the replica (SIGSTOP) and has the master drop its replication link (CLIENT KILL
 * TYPE replica), so what the instances write next — `meanwhile`, or LAG_MS of polling —
 * goes to the master alone; then kills the master and lets the replica go on (SIGCONT):
 * it finds its master gone and is promoted without those writes. Cutting the link is
 * what loses them: a stalled replica alone reads, when it wakes, what the master had
 * already sent to its socket. The stop stays under the sentinels' and the cluster's
 * 1 s down-after, so the replica is never counted down itself.
 */
async function withLaggingReplica(
  ports: { readonly master: number; readonly replica: number; readonly password?: string },
  meanwhile: (() => Promise<void>) | undefined,
  kill: () => Promise<void>,
): Promise<void> {
  const replica = connectTo(ports.replica, ports.password);
  const master = connectTo(ports.master, ports.password);
  let stopped: number | null = null;
  try {
    await Promise.all([replica.connect(), master.connect()]);
    const pid = Number(/process_id:(\d+)/.exec(await replica.info("server"))?.[1]);
    if (!Number.isInteger(pid) || pid <= 0) throw new Error("the replica did not tell its process id");
    replica.disconnect();
    process.kill(pid, "SIGSTOP");
    stopped = pid;
    const dropped = await master.call("CLIENT", "KILL", "TYPE", "replica");
    if (dropped !== 1) throw new Error(`the master dropped ${String(dropped)} replication links, not 1`);
    master.disconnect();
    if (meanwhile) await meanwhile();
    else await new Promise((resolve) => setTimeout(resolve, LAG_MS));
    await kill();
  } finally {
    if (stopped !== null) process.kill(stopped, "SIGCONT");
    replica.disconnect();
    master.disconnect();
  }
}
