// The shared coordinator contract, run against the Durable Object coordinator inside
// workerd with real Durable Object storage. Each subject is a fresh object (and a
// fresh budget object); every coordinator call is delivered to that object as an
// event of its own (runInDurableObject), as the Worker's requests and the object's
// timers are in production. The contract file runs unchanged: node:crypto and
// node:timers/promises exist under nodejs_compat.
import { runInDurableObject } from "cloudflare:test";
import type { DurableObjectStateApi } from "../../src/runtime/edge-env.js";
import type { Coordinator } from "../../src/watch/coordinator.js";
import {
  type CallBudget,
  createDurableCallBudget,
  createDurableObjectCoordinator,
  type DurableObjectCoordinator,
} from "../../src/watch/durable-object-coordinator.js";
import { describeCoordinatorContract } from "../watch/coordinator-contract.js";
import { env } from "./support.js";

/** One coordinator per object, built inside it on first use and kept with it. */
const coordinators = new Map<string, DurableObjectCoordinator>();
const budgets = new Map<string, CallBudget>();

describeCoordinatorContract(
  "Durable Object (workerd)",
  async (options) => {
    const name = `contract-${crypto.randomUUID()}`;
    const stub = env.BINDS.get(env.BINDS.idFromName(name));
    const budgetName = `contract-budget-${crypto.randomUUID()}`;

    // The budget object's own RPC methods read UPSTREAM_QPS from the Worker's vars; the
    // contract sets its own rate, so the same budget code runs in a budget object here.
    // (A stub belongs to the context that made it: one per call, made in the calling object.)
    const inBudget = <R>(call: (budget: CallBudget) => Promise<R>): Promise<R> =>
      runInDurableObject(
        env.BUDGET.get(env.BUDGET.idFromName(budgetName)),
        (_instance: unknown, state: DurableObjectStateApi) => {
          let budget = budgets.get(budgetName);
          if (!budget) {
            budget = createDurableCallBudget({ storage: state.storage, upstreamQps: options.upstreamQps });
            budgets.set(budgetName, budget);
          }
          return call(budget);
        },
      );

    const inObject = <R>(call: (coordinator: DurableObjectCoordinator) => Promise<R>): Promise<R> =>
      runInDurableObject(stub, (_instance: unknown, state: DurableObjectStateApi) => {
        let coordinator = coordinators.get(name);
        if (!coordinator) {
          coordinator = createDurableObjectCoordinator({
            storage: state.storage,
            budget: {
              takeCallPermit: () => inBudget((b) => b.takeCallPermit()),
              banUpstream: (ms) => inBudget((b) => b.banUpstream(ms)),
              takeRegistration: (key, perMinute) => inBudget((b) => b.takeRegistration(key, perMinute)),
              refundRegistration: (key, perMinute) => inBudget((b) => b.refundRegistration(key, perMinute)),
            },
            ...options,
          });
          coordinators.set(name, coordinator);
        }
        return call(coordinator);
      });

    const coordinator: Coordinator = {
      now: () => Date.now(),
      register: (reg, timeoutMs) => inObject((c) => c.register(reg, timeoutMs)),
      reassert: (reg, state, ago) => inObject((c) => c.reassert(reg, state, ago)),
      getRegistration: (traceId) => inObject((c) => c.getRegistration(traceId)),
      getState: (traceId) => inObject((c) => c.getState(traceId)),
      updateState: (traceId, mutate, opts) => inObject((c) => c.updateState(traceId, mutate, opts)),
      subscribe: (traceId, listener) => inObject((c) => c.subscribe(traceId, listener)),
      acquireLease: (traceId, leaseMs) => inObject((c) => c.acquireLease(traceId, leaseMs)),
      renewLease: (traceId, token, leaseMs) => inObject((c) => c.renewLease(traceId, token, leaseMs)),
      releaseLease: (traceId, token, minGapMs) => inObject((c) => c.releaseLease(traceId, token, minGapMs)),
      beginCall: (traceId, token, call) => inObject((c) => c.beginCall(traceId, token, call)),
      takeCallPermit: () => inObject((c) => c.takeCallPermit()),
      banUpstream: (ms) => inObject((c) => c.banUpstream(ms)),
      takeRegistration: (key, perMinute) => inObject((c) => c.takeRegistration(key, perMinute)),
      refundRegistration: (key, perMinute) => inObject((c) => c.refundRegistration(key, perMinute)),
      deliveries: {
        track: (traceId, atMs) => inObject((c) => c.deliveries.track(traceId, atMs)),
        due: (nowMs, limit) => inObject((c) => c.deliveries.due(nowMs, limit)),
        claim: (traceId, nowMs, claimMs) => inObject((c) => c.deliveries.claim(traceId, nowMs, claimMs)),
        settle: (traceId, token, id, destination, result) =>
          inObject((c) => c.deliveries.settle(traceId, token, id, destination, result)),
        schedule: (traceId, atMs) => inObject((c) => c.deliveries.schedule(traceId, atMs)),
        release: (traceId, token) => inObject((c) => c.deliveries.release(traceId, token)),
        tracked: () => inObject((c) => c.deliveries.tracked()),
        pendingRecords: () => inObject((c) => c.deliveries.pendingRecords()),
      },
      isReady: () => inObject((c) => c.isReady()),
      close: () => inObject((c) => c.close()),
    };
    // No `second`: every instance of a trace is its one object, so the cross-instance
    // cases do not apply (the contract skips them); the budget is its own object.
    return {
      coordinator,
      cleanup: async () => {
        await coordinator.close();
        coordinators.delete(name);
        budgets.delete(budgetName);
      },
    };
  },
  { sharedByInstances: false },
);
