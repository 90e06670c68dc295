// The slice of workerd's built-in `cloudflare:workers` module that the Worker entry
// uses. @cloudflare/workers-types declares it only as part of its global typings,
// which clash with the DOM and Node typings this project compiles with; the
// platform interfaces themselves live in src/runtime/edge-env.ts.
declare module "cloudflare:workers" {
  /**
   * Base class of a Durable Object whose public methods are callable over RPC
   * (`stub.method(...)`). `State` is the type of `ctx` (workers-types' second
   * parameter is `Props`; generics do not exist at run time).
   */
  export abstract class DurableObject<Env = unknown, State = unknown> {
    protected readonly ctx: State;
    protected readonly env: Env;
    constructor(ctx: State, env: Env);
  }
}
