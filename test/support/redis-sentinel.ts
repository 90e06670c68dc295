import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { dataNodeArgs, HOST, launchRedis, parseInfo, queryNode, type RedisProcess } from "./redis-process.js";
import { waitUntil } from "./server.js";

/*
 * A master, one replica and three sentinels (quorum 2), all private redis-server
 * processes, with short timeouts so a killed master is replaced within a few seconds.
 */

const SENTINELS = 3;
const SETTLE_TIMEOUT_MS = 30_000;
const FAILOVER_TIMEOUT_MS = 20_000;

export interface StartRedisSentinelOptions {
  /** The master name the sentinels monitor (default "bindwatch"). */
  readonly name?: string;
  /** A password on the data nodes (`requirepass`, `masterauth`; the sentinels get `auth-pass`); the sentinels have none. */
  readonly password?: string;
  /** `down-after-milliseconds` (default 1000). */
  readonly downAfterMs?: number;
  /** `failover-timeout` (default 5000). */
  readonly failoverTimeoutMs?: number;
}

export interface RedisAddress {
  readonly host: string;
  readonly port: number;
}

export interface RedisSentinel {
  readonly name: string;
  /** For a client: `new Redis({ sentinels: s.sentinels, name: s.name, password: s.password })`. */
  readonly sentinels: RedisAddress[];
  readonly password: string | undefined;
  /** bindwatch's variables for it: REDIS_SENTINELS, REDIS_SENTINEL_MASTER and, with a password, REDIS_PASSWORD. */
  readonly env: Readonly<Record<string, string>>;
  /** The data nodes' ports, the first master first. */
  readonly dataPorts: readonly number[];
  /** The master as the sentinels name it now (`SENTINEL GET-MASTER-ADDR-BY-NAME`, the first that answers). */
  masterAddress(): Promise<RedisAddress>;
  /** SIGKILLs (or `signal`s) the current master and resolves with its address once it exited. */
  killMaster(signal?: NodeJS.Signals): Promise<RedisAddress>;
  /**
   * Resolves with the new master once every sentinel names one other than the master
   * killed last and it answers `ROLE` as master.
   */
  waitForFailover(timeoutMs?: number): Promise<RedisAddress>;
  /**
   * Starts a killed data node again (empty) and resolves once it replicates from the
   * current master and every sentinel sees it as a replica that is up. By default it
   * starts with `--replicaof` the current master; `{ asConfigured: true }` starts it as
   * it first was and leaves turning a former master into a replica to the sentinels
   * (which wait about 8 s before they do).
   */
  restart(port: number, opts?: { readonly asConfigured?: boolean }): Promise<void>;
  /** Stops every process and removes their directories. */
  stop(): Promise<void>;
}

/**
 * Starts a master, a replica of it and three sentinels monitoring it, and resolves once
 * every sentinel knows the master, the replica and the two other sentinels, and the
 * replica's link is up.
 * @example const s = await startRedisSentinel({ password: "pw" }); await s.killMaster(); await s.waitForFailover();
 */
export async function startRedisSentinel(opts: StartRedisSentinelOptions = {}): Promise<RedisSentinel> {
  const name = opts.name ?? "bindwatch";
  const password = opts.password;
  const auth = password === undefined ? [] : ["--requirepass", password, "--masterauth", password];
  const processes: RedisProcess[] = [];
  const stop = async () => {
    await Promise.allSettled(processes.map((p) => p.remove()));
  };
  let data: RedisProcess[];
  let sentinels: RedisProcess[];
  try {
    const master = await launchRedis({ argv: (port, dir) => dataNodeArgs(port, dir, auth) });
    processes.push(master);
    const replica = await launchRedis({
      argv: (port, dir) => dataNodeArgs(port, dir, [...auth, "--replicaof", HOST, String(master.port)]),
    });
    processes.push(replica);
    data = [master, replica];
    const config = (port: number, dir: string) =>
      [
        `port ${port}`,
        `bind ${HOST}`,
        `dir ${dir}`,
        "daemonize no",
        'logfile ""',
        "loglevel warning",
        "sentinel resolve-hostnames no",
        `sentinel monitor ${name} ${HOST} ${master.port} 2`,
        `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1_000}`,
        `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 5_000}`,
        `sentinel parallel-syncs ${name} 1`,
        ...(password === undefined ? [] : [`sentinel auth-pass ${name} ${password}`]),
        "",
      ].join("\n");
    sentinels = await Promise.all(
      Array.from({ length: SENTINELS }, () =>
        launchRedis({
          // Sentinel rewrites its config file as it learns: one writable file per sentinel.
          argv: async (port, dir) => {
            const file = join(dir, "sentinel.conf");
            await writeFile(file, config(port, dir));
            return [file, "--sentinel"];
          },
        }),
      ),
    );
    processes.push(...sentinels);
    await waitForReplica(sentinels, name, replica.port, master.port, password, "the sentinels to know every node");
  } catch (err) {
    await stop();
    throw err;
  }

  const masterAddress = async (): Promise<RedisAddress> => {
    for (const s of sentinels) {
      const address = await addressFrom(s.port, name);
      if (address) return address;
    }
    throw new Error("no sentinel names a master");
  };
  const dataNode = (port: number): RedisProcess => {
    const found = data.find((p) => p.port === port);
    if (!found) throw new Error(`no data node on port ${port}`);
    return found;
  };
  let killed: number | undefined;
  return {
    name,
    sentinels: sentinels.map((s) => ({ host: HOST, port: s.port })),
    password,
    env: {
      REDIS_SENTINELS: sentinels.map((s) => `${HOST}:${s.port}`).join(","),
      REDIS_SENTINEL_MASTER: name,
      ...(password === undefined ? {} : { REDIS_PASSWORD: password }),
    },
    dataPorts: data.map((p) => p.port),
    masterAddress,
    async killMaster(signal = "SIGKILL") {
      const address = await masterAddress();
      await dataNode(address.port).kill(signal);
      killed = address.port;
      return address;
    },
    async waitForFailover(timeoutMs = FAILOVER_TIMEOUT_MS) {
      if (killed === undefined) throw new Error("no master was killed through this handle");
      const old = killed;
      return waitUntil(
        async () => {
          const named = await Promise.all(sentinels.map((s) => addressFrom(s.port, name)));
          const ports = new Set(named.map((a) => a?.port));
          const [address] = named;
          if (!address || ports.size !== 1 || address.port === old) return null;
          const role = await queryNode(address.port, [["ROLE"]], { password });
          return (role?.[0] as unknown[] | undefined)?.[0] === "master" ? address : null;
        },
        timeoutMs,
        `the sentinels to promote a replica in place of ${old}`,
        100,
      );
    },
    async restart(port, restartOpts = {}) {
      const node = dataNode(port);
      if (node.isRunning) throw new Error(`the data node on ${port} runs`);
      const master = await masterAddress();
      if (master.port === port) throw new Error(`the sentinels still name ${port} the master`);
      await node.start(restartOpts.asConfigured ? [] : ["--replicaof", HOST, String(master.port)]);
      await waitForReplica(sentinels, name, port, master.port, password, `${port} to rejoin as a replica`);
    },
    stop,
  };
}

/** The master address a sentinel names, or null when it does not answer. */
async function addressFrom(sentinelPort: number, name: string): Promise<RedisAddress | null> {
  const replies = await queryNode(sentinelPort, [["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]]);
  const [host, port] = (replies?.[0] as [string, string] | null | undefined) ?? [];
  return host === undefined || port === undefined ? null : { host, port: Number(port) };
}

/** A flat `[field, value, …]` reply as a record. */
function toRecord(reply: unknown): Record<string, string> {
  const fields = Array.isArray(reply) ? reply.map(String) : [];
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] as string] = fields[i + 1] as string;
  return record;
}

/**
 * Waits until the replica on `replicaPort` replicates from `masterPort` with its link up,
 * and every sentinel knows that master as up, the two other sentinels, and the replica
 * as an up replica of it.
 */
async function waitForReplica(
  sentinels: readonly RedisProcess[],
  name: string,
  replicaPort: number,
  masterPort: number,
  password: string | undefined,
  what: string,
): Promise<void> {
  await waitUntil(
    async () => {
      const replication = await queryNode(replicaPort, [["INFO", "replication"]], { password });
      const info = parseInfo(replication?.[0]);
      if (info.get("master_link_status") !== "up" || info.get("master_port") !== String(masterPort)) return false;
      const views = await Promise.all(
        sentinels.map((s) =>
          queryNode(s.port, [
            ["SENTINEL", "MASTER", name],
            ["SENTINEL", "REPLICAS", name],
          ]),
        ),
      );
      return views.every((view) => {
        if (!view) return false;
        const master = toRecord(view[0]);
        const replica = (view[1] as unknown[]).map(toRecord).find((r) => r.port === String(replicaPort));
        return (
          master.port === String(masterPort) &&
          master.flags === "master" &&
          master["num-other-sentinels"] === String(sentinels.length - 1) &&
          replica?.flags === "slave"
        );
      });
    },
    SETTLE_TIMEOUT_MS,
    what,
    100,
  );
}
