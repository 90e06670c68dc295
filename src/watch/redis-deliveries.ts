import { randomUUID } from "node:crypto";
import type { Cluster, Redis } from "ioredis";
import type { DeliveryRecord } from "../domain/webhook.js";
import { afterAttempt, type DeliveryClaim, type DeliveryStore, firstDue } from "./deliveries.js";
import type { RedisKeys } from "./redis-keys.js";
import { type CoordinatorScripts, MAX_CAS_ATTEMPTS, pxOf } from "./redis-scripts.js";

/*
 * The webhook deliveries of the Redis coordinator (SPEC §3, Webhooks): each trace's
 * records in one key beside its state, the traces with deliveries to make in one sorted
 * set by when the next is due, and a claim key that lets one instance at a time attempt
 * a trace's delivery. Claims and settlements are compare-and-set scripts over the
 * records' text: an instance that lost a race learns it from the reply.
 */

/** Runs one request to Redis, turning a failure into the coordinator's unavailable error. */
export type RedisRequest = <T>(what: string, run: () => Promise<T>) => Promise<T>;

export interface RedisDeliveryParts {
  readonly redis: Redis | Cluster;
  readonly keys: RedisKeys;
  readonly scripts: CoordinatorScripts;
  readonly store: RedisRequest;
}

/**
 * The deliveries' store over the coordinator's connection, keys and scripts.
 * @example const deliveries = createRedisDeliveryStore({ redis, keys, scripts, store });
 */
export function createRedisDeliveryStore({ redis, keys, scripts, store }: RedisDeliveryParts): DeliveryStore {
  /** The deliveries' text each claim was decided on, until it is settled. */
  const claimedTexts = new Map<string, string>();

  return {
    async track(traceId, atMs) {
      await store("track webhooks", () => redis.zadd(keys.webhooks, "NX", Math.floor(atMs), traceId));
    },
    async due(nowMs, limit) {
      return store("due webhooks", () =>
        redis.zrangebyscore(keys.webhooks, "-inf", Math.floor(nowMs), "LIMIT", 0, limit),
      );
    },
    async claim(traceId, nowMs, claimMs): Promise<DeliveryClaim> {
      const k = keys.trace(traceId);
      const look = (await store("look at webhooks", () =>
        scripts.deliveryLook([k.deliveries, k.deliveryClaim, k.state, k.poll], []),
      )) as [string, string | number | undefined, number | undefined];
      if (look[0] === "done") return { kind: "done" };
      if (look[0] === "open") return { kind: "open", polled: look[1] === 1 };
      const text = String(look[1]);
      const claimLeft = look[2] ?? 0;
      if (claimLeft > 0) return { kind: "later", atMs: nowMs + claimLeft };
      const due = firstDue(JSON.parse(text) as DeliveryRecord[], nowMs);
      if (!due) return { kind: "done" };
      if ("atMs" in due) return { kind: "later", atMs: due.atMs };
      const token = randomUUID();
      const claimed = await store("claim webhook", () =>
        scripts.deliveryClaim([k.deliveries, k.deliveryClaim], [token, pxOf(claimMs), text]),
      );
      if (claimed !== 1) return { kind: "later", atMs: nowMs };
      claimedTexts.set(`${traceId}\n${token}`, text);
      return { kind: "deliver", token, record: due.record, destination: due.destination };
    },
    async settle(traceId, token, id, destination, result) {
      const k = keys.trace(traceId);
      const claimKey = `${traceId}\n${token}`;
      let text = claimedTexts.get(claimKey);
      claimedTexts.delete(claimKey);
      for (let attempt = 0; text !== undefined && attempt < MAX_CAS_ATTEMPTS; attempt += 1) {
        const { records: left, settled } = afterAttempt(JSON.parse(text) as DeliveryRecord[], id, destination, result);
        const expected: string = text;
        const reply = (await store("settle webhook", () =>
          scripts.deliverySettle(
            [k.deliveries, k.deliveryClaim],
            [token, expected, left.length === 0 ? "" : JSON.stringify(left)],
          ),
        )) as [number, string | undefined];
        if (reply[0] === 1) return settled;
        if (reply[0] === 0) return null;
        text = reply[1] || undefined;
      }
      return null;
    },
    async release(traceId, token) {
      const k = keys.trace(traceId);
      const claimKey = `${traceId}\n${token}`;
      const text = claimedTexts.get(claimKey);
      claimedTexts.delete(claimKey);
      if (text === undefined) return;
      // The deliveries as they were: only the claim goes.
      await store("release webhook", () =>
        scripts.deliverySettle([k.deliveries, k.deliveryClaim], [token, text, text]),
      );
    },
    async pendingRecords() {
      const ids = await store("list webhooks", () => redis.zrange(keys.webhooks, 0, -1));
      const found: DeliveryRecord[] = [];
      for (const id of ids) {
        const text = await store("get webhooks", () => redis.get(keys.trace(id).deliveries));
        if (text) found.push(...(JSON.parse(text) as DeliveryRecord[]));
      }
      return found;
    },
    async schedule(traceId, atMs) {
      if (atMs === null) await store("untrack webhooks", () => redis.zrem(keys.webhooks, traceId));
      else await store("schedule webhooks", () => redis.zadd(keys.webhooks, Math.floor(atMs), traceId));
    },
    async tracked() {
      return store("count webhooks", () => redis.zcard(keys.webhooks));
    },
  };
}
