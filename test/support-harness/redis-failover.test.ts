import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectTo, FAILOVER_TOPOLOGIES, type FailoverStore } from "../support/redis-failover.js";

/*
 * The failover the SPEC §4.9 tests rely on: what is written while the replica is cut
 * off is missing on the replica promoted in place of the dead master, and what was
 * written and replicated before is there.
 */

describe.each(FAILOVER_TOPOLOGIES)("failOver on $name", (topology) => {
  let store: FailoverStore;

  beforeAll(async () => {
    store = await topology.start();
  }, 60_000);
  afterAll(async () => {
    await store?.stop();
  });

  it("promotes a replica without the writes made after its link was cut", async () => {
    const traceId = `harness-${randomUUID()}`;
    const key = (what: string) => `bw:{${traceId}}:${what}`;
    const before = connectTo(await store.masterOf(traceId), store.password);
    await before.connect();
    await before.set(key("kept"), "1");
    before.disconnect();
    await store.replicated(traceId);

    const oldMaster = await store.masterOf(traceId);
    await store.failOver(traceId, async () => {
      const master = connectTo(oldMaster, store.password);
      try {
        await master.connect();
        expect(await master.set(key("lost"), "1")).toBe("OK");
      } finally {
        master.disconnect();
      }
    });

    const newMaster = await store.masterOf(traceId);
    expect(newMaster).not.toBe(oldMaster);
    const after = connectTo(newMaster, store.password);
    try {
      await after.connect();
      expect(await after.get(key("kept"))).toBe("1");
      expect(await after.get(key("lost"))).toBeNull();
    } finally {
      after.disconnect();
    }
  }, 60_000);
});
