import { randomUUID } from "node:crypto";
import type { Cluster, Redis } from "ioredis";
import { createRedisCoordinator } from "../../src/watch/redis-coordinator.js";
import type { CoordinatorContractOptions, CoordinatorContractSubject } from "../watch/coordinator-contract.js";

type Connections = { readonly redis: Redis | Cluster; readonly subscriber: Redis | Cluster };

/**
 * Two Redis coordinators, each on its own connections, sharing a fresh key prefix:
 * two instances of one deployment, as the coordinator contract wants them.
 */
export function redisContractSubject(
  first: Connections,
  other: Connections,
  options: CoordinatorContractOptions,
): CoordinatorContractSubject {
  const prefix = `bwtest:${randomUUID()}:`;
  const coordinator = createRedisCoordinator({ ...first, prefix, ...options });
  const second = createRedisCoordinator({ ...other, prefix, ...options });
  return {
    coordinator,
    second,
    async cleanup() {
      await coordinator.close();
      await second.close();
    },
  };
}
