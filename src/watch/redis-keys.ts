/** The key prefix used when none is configured. */
export const DEFAULT_KEY_PREFIX = "bw:";

/** The Redis keys of one trace; all share the hash tag `{<trace_id>}`, so one Lua script may touch them in a Cluster. */
export interface TraceKeys {
  /** String: the registration as canonical JSON (compared on a repeated POST). */
  readonly reg: string;
  /** String: the state object as JSON; compared and swapped as text. */
  readonly state: string;
  /**
   * String `<token>:<ms>`: the poll lease's holder (empty once released) and when the last
   * call started on the Redis clock (empty before the first); PX = the lease. One key, so
   * recording a call's start renews the lease in the same write.
   */
  readonly poll: string;
  /** Sharded pub/sub channel (SPUBLISH/SSUBSCRIBE): `s<state JSON>`, `a` (holder alive), `r` (released). */
  readonly events: string;
  /** String: the webhook deliveries of the trace's finals, a JSON array of DeliveryRecord (src/domain/webhook.ts). */
  readonly deliveries: string;
  /** String: the token of the instance making a delivery attempt now (PX: the attempt's time). */
  readonly deliveryClaim: string;
}

/** The deployment-wide key of the upstream budget (SPEC §4.5), with a hash tag of its own. */
export interface UpstreamKeys {
  /** String: the earliest time the next call may start, ms on the Redis clock (a ban moves it). */
  readonly budget: string;
}

export interface RedisKeys {
  readonly prefix: string;
  trace(traceId: string): TraceKeys;
  readonly upstream: UpstreamKeys;
  /** Hash: one API key's registration quota (`tokens`, `updated_ms`); `key` is a digest, never the key itself. */
  quota(key: string): string;
  /** ZSET, tag `{webhooks}`: the traces whose webhooks are looked after, scored by when to look next (ms). */
  readonly webhooks: string;
}

/**
 * The one place Redis key names come from.
 *
 * The budget carries the tag `{upstream}`, each quota `{quota:<key>}`. A prefix
 * containing `{` or `}` would replace the trace's hash tag with its own and is rejected.
 *
 * @example createRedisKeys("bw:").trace("t-1").state // "bw:{t-1}:state"
 */
export function createRedisKeys(prefix: string = DEFAULT_KEY_PREFIX): RedisKeys {
  if (prefix.includes("{") || prefix.includes("}")) {
    throw new TypeError(`Redis key prefix must not contain "{" or "}" (it would change the hash tag): ${prefix}`);
  }
  const upstream: UpstreamKeys = Object.freeze({ budget: `${prefix}{upstream}:budget` });
  return Object.freeze({
    prefix,
    trace(traceId: string): TraceKeys {
      const base = `${prefix}{${traceId}}`;
      return {
        reg: `${base}:reg`,
        state: `${base}:state`,
        poll: `${base}:poll`,
        events: `${base}:events`,
        deliveries: `${base}:deliveries`,
        deliveryClaim: `${base}:delivery-claim`,
      };
    },
    upstream,
    quota: (key: string) => `${prefix}{quota:${key}}:registrations`,
    webhooks: `${prefix}{webhooks}:tracked`,
  });
}
