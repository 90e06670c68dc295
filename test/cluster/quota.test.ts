import { describe, expect, it } from "vitest";
import { type Instance, useCluster, type Watcher } from "../support/cluster.js";
import { bindBody, newTraceId, postBind } from "../support/server.js";

/*
 * REGISTRATIONS_PER_MINUTE is counted per API key for the whole deployment: two
 * instances on one Redis share each key's quota, a key past it gets 429 with
 * Retry-After on either instance while another key still registers, and an identical
 * repeat of an existing registration (the idempotent 200) does not count.
 */

const QUOTA = 4;
const KEYS = ["quota-key-one", "quota-key-two", "quota-key-warm-up"] as const;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

let instances: Instance[] = [];
const watchers: Watcher[] = [];

useCluster(
  {
    count: 2,
    appKey: "quota-app-key",
    appSecret: "quota-app-secret-0123456789",
    intervalMs: 1000,
    env: { API_KEYS: KEYS.join(","), REGISTRATIONS_PER_MINUTE: String(QUOTA) },
    warmUpApiKey: KEYS[2],
    watchers,
  },
  (cluster) => {
    instances = cluster.instances;
  },
);

describe("registration quota across instances on Redis", () => {
  it("answers 429 with Retry-After on one key past its quota on either instance, while another key registers", async () => {
    const [a, b] = instances as [Instance, Instance];
    const first = bindBody(newTraceId("quota"));
    const accepted: number[] = [];
    for (let i = 0; i < QUOTA; i += 1) {
      const body = i === 0 ? first : bindBody(newTraceId("quota"));
      accepted.push((await postBind((i % 2 === 0 ? a : b).url, body, auth(KEYS[0]))).status);
      // An identical repeat is answered 200 and costs nothing, on either instance.
      if (i === 1) expect((await postBind(b.url, first, auth(KEYS[0]))).status).toBe(200);
    }
    expect(accepted).toEqual(Array(QUOTA).fill(201));

    for (const instance of [a, b]) {
      const res = await fetch(`${instance.url}/v1/binds`, {
        method: "POST",
        headers: { "content-type": "application/json", ...auth(KEYS[0]) },
        body: JSON.stringify(bindBody(newTraceId("quota-over"))),
      });
      expect(res.status).toBe(429);
      const retryAfter = Number(res.headers.get("retry-after"));
      // QUOTA a minute: the next registration fits about 60 / QUOTA seconds after the bucket ran dry.
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(Math.ceil(60 / QUOTA));
      expect(await res.json()).toMatchObject({ error: { code: "rate_limited" } });
    }
    // The repeat is still answered while the key is over its quota.
    expect((await postBind(a.url, first, auth(KEYS[0]))).status).toBe(200);
    // Another key has a quota of its own.
    expect((await postBind(b.url, bindBody(newTraceId("quota-other")), auth(KEYS[1]))).status).toBe(201);
    expect((await postBind(a.url, bindBody(newTraceId("quota-other")), auth(KEYS[1]))).status).toBe(201);
  }, 30_000);
});
