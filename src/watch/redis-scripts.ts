import { readFileSync } from "node:fs";
import type { Cluster, Redis } from "ioredis";

/*
 * The Lua scripts of the Redis coordinator, one file each under ./lua/, opening with
 * the KEYS, ARGV and return value it takes (as BullMQ's commands/ do). Each script
 * touches the keys of a single trace (hash tag `{<trace_id>}`), or only the budget's or a
 * quota's own keys, so every script runs on one Cluster slot.
 *
 * Clocks (SPEC §4.7): every time a script compares is read there, with TIME, on the
 * node that holds the keys; callers pass durations (a lease, a gap, a ban) and the
 * deadline, which itself came from TIME at registration. Relative TTLs (PX/PEXPIRE)
 * need no clock.
 *
 * The files are read once, when this module loads (the build copies them beside it).
 */

type Arg = string | number;

/** Optimistic updates give up after this many lost races (each loss means another writer succeeded). */
export const MAX_CAS_ATTEMPTS = 32;

/** PX and PEXPIRE take whole milliseconds above zero. */
export function pxOf(ms: number): number {
  return Math.max(1, Math.ceil(ms));
}

const SCRIPTS = {
  register: { file: "register.lua", keys: 3 },
  reassert: { file: "reassert.lua", keys: 3 },
  updateState: { file: "update-state.lua", keys: 3 },
  acquireLease: { file: "acquire-lease.lua", keys: 2 },
  renewLease: { file: "renew-lease.lua", keys: 1 },
  releaseLease: { file: "release-lease.lua", keys: 1 },
  beginCall: { file: "begin-call.lua", keys: 2 },
  takePermit: { file: "take-permit.lua", keys: 1 },
  banUpstream: { file: "ban-upstream.lua", keys: 1 },
  takeRegistration: { file: "take-registration.lua", keys: 1 },
  deliveryLook: { file: "delivery-look.lua", keys: 4 },
  deliveryClaim: { file: "delivery-claim.lua", keys: 2 },
  deliverySettle: { file: "delivery-settle.lua", keys: 2 },
} as const;

export type ScriptName = keyof typeof SCRIPTS;

const SOURCES: Readonly<Record<ScriptName, string>> = Object.fromEntries(
  Object.entries(SCRIPTS).map(([name, { file }]) => [
    name,
    readFileSync(new URL(`./lua/${file}`, import.meta.url), "utf8"),
  ]),
) as Record<ScriptName, string>;

/** The scripts as typed functions over one connection; ioredis sends EVALSHA and falls back to EVAL on NOSCRIPT. */
export interface CoordinatorScripts {
  register(keys: [reg: string, state: string, poll: string], args: [string, string, number, number]): Promise<unknown>;
  reassert(
    keys: [reg: string, state: string, poll: string],
    args: [string, string, number, number | "", number],
  ): Promise<unknown>;
  updateState(
    keys: [state: string, reg: string, deliveries: string],
    args: [string, string, "0" | "1", number, string, number | "", string, number],
  ): Promise<unknown>;
  acquireLease(keys: [reg: string, poll: string], args: [string, number]): Promise<unknown>;
  renewLease(keys: [poll: string], args: [string, number, string]): Promise<unknown>;
  releaseLease(keys: [poll: string], args: [string, number, string]): Promise<unknown>;
  beginCall(
    keys: [poll: string, state: string],
    args: [string, number, number, number, string, string, string],
  ): Promise<unknown>;
  takePermit(keys: [budget: string], args: [number]): Promise<unknown>;
  banUpstream(keys: [budget: string], args: [number]): Promise<unknown>;
  takeRegistration(keys: [quota: string], args: [number, "take" | "refund"]): Promise<unknown>;
  deliveryLook(keys: [deliveries: string, claim: string, state: string, poll: string], args: []): Promise<unknown>;
  deliveryClaim(keys: [deliveries: string, claim: string], args: [string, number, string]): Promise<unknown>;
  deliverySettle(keys: [deliveries: string, claim: string], args: [string, string, string]): Promise<unknown>;
}

/** Command names on the connection; namespaced so they cannot clash with the caller's own scripts. */
const COMMAND_PREFIX = "bindwatch_";

type ScriptCommand = (...args: Arg[]) => Promise<unknown>;

/**
 * Defines the coordinator's scripts on a connection (idempotent) and returns them as functions.
 * @example const scripts = defineCoordinatorScripts(redis); await scripts.renewLease([keys.poll], [token, 5000, keys.events]);
 */
export function defineCoordinatorScripts(client: Redis | Cluster): CoordinatorScripts {
  const commands = client as unknown as Record<string, ScriptCommand | undefined>;
  const bind = (name: ScriptName) => {
    const command = `${COMMAND_PREFIX}${name}`;
    if (typeof commands[command] !== "function") {
      client.defineCommand(command, { lua: SOURCES[name], numberOfKeys: SCRIPTS[name].keys });
    }
    return (keys: readonly string[], args: readonly Arg[]): Promise<unknown> => {
      const run = commands[command];
      if (!run) throw new Error(`script ${command} is not defined`);
      return run.call(client, ...keys, ...args);
    };
  };
  return Object.fromEntries(
    Object.keys(SCRIPTS).map((name) => [name, bind(name as ScriptName)]),
  ) as unknown as CoordinatorScripts;
}
