// The shared coordinator contract, run against the Durable Object coordinator inside
// workerd with real Durable Object storage. Each subject is a fresh object (and a
// fresh budget object); every coordinator call is delivered to that object as an
// event of its own (runInDurableObject), as the Worker's requests and the object's
// timers are in production. The contract file runs unchanged: node:crypto and
// node:timers/promises exist under nodejs_compat.
import { runInDurableObject } from "cloudflare:test";
import type { DurableObjectStateApi } from "../../src/runtime/worker.js";
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
              takeCallPermit: (nowMs) => inBudget((b) => b.takeCallPermit(nowMs)),
              banUpstream: (untilMs) => inBudget((b) => b.banUpstream(untilMs)),
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
      register: (reg, initial, lastCallStartMs) => inObject((c) => c.register(reg, initial, lastCallStartMs)),
      getRegistration: (traceId) => inObject((c) => c.getRegistration(traceId)),
      getState: (traceId) => inObject((c) => c.getState(traceId)),
      updateState: (traceId, mutate) => inObject((c) => c.updateState(traceId, mutate)),
      subscribe: (traceId, listener) => inObject((c) => c.subscribe(traceId, listener)),
      setInterest: (traceId, instanceId, untilMs) => inObject((c) => c.setInterest(traceId, instanceId, untilMs)),
      hasInterest: (traceId, nowMs) => inObject((c) => c.hasInterest(traceId, nowMs)),
      acquireLease: (traceId, ttlMs) => inObject((c) => c.acquireLease(traceId, ttlMs)),
      renewLease: (traceId, token, ttlMs) => inObject((c) => c.renewLease(traceId, token, ttlMs)),
      releaseLease: (traceId, token) => inObject((c) => c.releaseLease(traceId, token)),
      beginCall: (traceId, token, nowMs, minGapMs) => inObject((c) => c.beginCall(traceId, token, nowMs, minGapMs)),
      takeCallPermit: (nowMs) => inObject((c) => c.takeCallPermit(nowMs)),
      banUpstream: (untilMs) => inObject((c) => c.banUpstream(untilMs)),
      takeRegistration: (key, perMinute) => inObject((c) => c.takeRegistration(key, perMinute)),
      refundRegistration: (key, perMinute) => inObject((c) => c.refundRegistration(key, perMinute)),
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
