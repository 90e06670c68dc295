/** The key prefix used when none is configured. */
export const DEFAULT_KEY_PREFIX = "bw:";

/** The Redis keys of one trace; all share the hash tag `{<trace_id>}`, so one Lua script may touch them in a Cluster. */
export interface TraceKeys {
  /** String: the registration as canonical JSON (compared on a repeated POST). */
  readonly reg: string;
  /** String: the state object as JSON; compared and swapped as text. */
  readonly state: string;
  /** String: the poll lease token (PX = lease ttl). */
  readonly lease: string;
  /** String: when the last checkbind call started, in caller-clock ms. */
  readonly lastCall: string;
  /** ZSET: member = instance id, score = wanted until (ms). */
  readonly interest: string;
  /** Sharded pub/sub channel (SPUBLISH/SSUBSCRIBE) carrying each new state's JSON. */
  readonly events: string;
}

/** The deployment-wide keys of the upstream budget (SPEC §4.5); they share their own hash tag. */
export interface UpstreamKeys {
  /** Hash: the token bucket (`tokens`, `updated_ms`). */
  readonly budget: string;
  /** String: a TOP rate-limit ban in force until this time (ms). */
  readonly ban: string;
}

export interface RedisKeys {
  readonly prefix: string;
  trace(traceId: string): TraceKeys;
  readonly upstream: UpstreamKeys;
  /** Hash: one API key's registration quota (`tokens`, `updated_ms`); `key` is a digest, never the key itself. */
  quota(key: string): string;
}

/**
 * The one place Redis key names come from.
 *
 * The budget and the ban are read together by one script, so in a Cluster they must
 * live in one slot: both carry the tag `{upstream}`. A prefix containing `{` or `}`
 * would replace the trace's hash tag with its own and is rejected.
 *
 * @example createRedisKeys("bw:").trace("t-1").state // "bw:{t-1}:state"
 */
export function createRedisKeys(prefix: string = DEFAULT_KEY_PREFIX): RedisKeys {
  if (prefix.includes("{") || prefix.includes("}")) {
    throw new TypeError(`Redis key prefix must not contain "{" or "}" (it would change the hash tag): ${prefix}`);
  }
  const upstream: UpstreamKeys = Object.freeze({
    budget: `${prefix}{upstream}:budget`,
    ban: `${prefix}{upstream}:ban`,
  });
  return Object.freeze({
    prefix,
    trace(traceId: string): TraceKeys {
      const base = `${prefix}{${traceId}}`;
      return {
        reg: `${base}:reg`,
        state: `${base}:state`,
        lease: `${base}:lease`,
        lastCall: `${base}:last_call`,
        interest: `${base}:interest`,
        events: `${base}:events`,
      };
    },
    upstream,
    quota: (key: string) => `${prefix}{quota:${key}}:registrations`,
  });
}
