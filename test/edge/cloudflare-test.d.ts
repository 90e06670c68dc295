// The slice of @cloudflare/vitest-pool-workers' `cloudflare:test` module these tests use.
// Its own typings build on @cloudflare/workers-types' globals, which clash with the DOM
// and Node typings the rest of the project compiles with (one tsconfig checks it all).
declare module "cloudflare:test" {
  /** The bindings, vars and secrets of the Worker under test (test/edge/support.ts gives them their type). */
  export const env: unknown;
  /** The Worker's default export, reached like a service binding. */
  export const SELF: { fetch(input: string | Request, init?: RequestInit): Promise<Response> };
  /** Runs `callback` inside the object behind `stub`, as one more event of that object. */
  export function runInDurableObject<Instance, State, R>(
    stub: unknown,
    callback: (instance: Instance, state: State) => R | Promise<R>,
  ): Promise<R>;
  /** Runs the object's alarm now if one is set; true when it ran. */
  export function runDurableObjectAlarm(stub: unknown): Promise<boolean>;
  /** Tears the object's instance down (memory gone, storage kept), as Cloudflare does to an idle object. */
  export function evictDurableObject(stub: unknown): Promise<void>;
  /** Resets every Durable Object instance (memory gone, storage kept), as a restart or eviction does. */
  export function abortAllDurableObjects(): Promise<void>;
}
