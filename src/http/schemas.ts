import { z } from "zod";
import { BIND_ERROR_CODES, BIND_STATUSES, type BindState, TRACE_ID_PATTERN } from "../domain/bind.js";
import type { WebhookEventType } from "../domain/webhook.js";
import { ERROR_CODES, type ErrorCode } from "./errors.js";

/*
 * The schemas of the HTTP API (SPEC §3), defined once: the server validates what it is
 * sent with them (src/http/validation.ts) and /openapi.json is generated from them
 * (src/http/api-description.ts). A request schema's messages are those a 400 answers
 * with, after the field's name: "wait must be a number of seconds from 0 to 60".
 * Schemas with an `id` are the document's named components; a schema that is also used
 * `.nullable()` has none (the generator would make its component nullable).
 */

// ---- requests ---------------------------------------------------------------------

const TRACE_ID_RULE = "must match ^[A-Za-z0-9._-]{1,128}$";

const traceId = z
  .string()
  .regex(TRACE_ID_PATTERN, TRACE_ID_RULE)
  .meta({
    description: "The bind attempt's unique id, the one checkbind is called with.",
    examples: ["213d614316665898871384404d071e"],
  });

/** The path parameter of every `/v1/binds/{trace_id}` route. */
export const traceIdParams = z.object({ trace_id: traceId });

/** A version as a query parameter; empty or absent means 0. */
const versionText = (description: string) =>
  z
    .string()
    .regex(/^(?:\d{1,15})?$/, "must be a non-negative integer")
    .meta({ description, examples: ["3"] });

/** The watch token travels as `?token=` (or `Authorization: Bearer`, see the security schemes). */
const watchToken = z.string().meta({
  description:
    "The watch token of the POST answer, when WATCH_TOKEN_SECRET is set. A missing one is 401, one that is not this trace's (or expired, or malformed) 403.",
});

/** The query of the long-poll, `GET /v1/binds/{trace_id}`. */
export const stateQuery = z.object({
  // 0–60 with at most three decimals, as one pattern so that the document says it exactly.
  wait: z
    .string()
    .regex(/^(?:[0-5]?\d(?:\.\d{1,3})?|60(?:\.0{1,3})?)?$/, "must be a number of seconds from 0 to 60")
    .meta({
      description:
        "Seconds (0–60, up to three decimals) to hold the request for a change when the state's version is not above `after` and it is not final. Empty or absent: answer at once.",
      examples: ["30"],
    })
    .optional(),
  after: versionText("The version the client has; the answer waits for a higher one. Empty or absent: 0.").optional(),
  token: watchToken.optional(),
});

/** The query of the SSE stream, `GET /v1/binds/{trace_id}/events`. */
export const eventsQuery = z.object({
  last_event_id: versionText(
    "The last event id the client has, for a first connection (a reconnecting EventSource sends the `Last-Event-ID` header, which wins). Empty or absent: 0, send the current state.",
  ).optional(),
  token: watchToken.optional(),
});

/** The request headers of the SSE stream that the document names. */
export const eventsHeaders = z.object({
  "last-event-id": z
    .string()
    .meta({
      description:
        "Sent by a reconnecting EventSource: the last version it got. A value that is not a non-negative integer counts as absent (a 400 would stop the EventSource for good).",
    })
    .optional(),
});

/** Code points in `s`: what JSON Schema's maxLength counts, where a JS string's length counts UTF-16 units. */
function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n += 1;
  return n;
}

/**
 * A non-empty string of at most `max` characters, counted as the API description's
 * `maxLength` counts them (code points): zod's own `.max` counts UTF-16 units, so 200
 * emoji, valid by the document, would have been refused.
 */
function characters(max: number) {
  return z
    .string()
    .min(1, "must not be empty")
    .refine((s) => s.length <= max || codePoints(s) <= max, `must be at most ${max} characters`)
    .meta({ maxLength: max });
}

const text = characters(256);

/** The body of POST /v1/binds (SPEC §3): unknown fields are refused so a typo is not silently ignored. */
export const registrationSchema = z
  .strictObject({
    trace_id: traceId,
    open_id: text.meta({ description: "The user's openId." }),
    product_key: text.meta({ description: "The Feiyan product key." }),
    user_type: text.meta({ description: "The user type, e.g. `ilop`.", examples: ["ilop"] }),
    device_name: text.meta({ description: "checkbind's `device_name`." }).optional(),
    iot_id: text.meta({ description: "checkbind's `iot_id`." }).optional(),
    server_event_request_id: text.meta({ description: "checkbind's `server_event_request_id`." }).optional(),
    params: z
      .record(z.string(), z.unknown())
      .meta({
        description:
          'checkbind\'s `params`, sent to TOP as its JSON text, e.g. `{"ssProductKey":"…","authCode":"…"}`; at most 32 levels deep.',
      })
      .optional(),
    callback_url: characters(2048)
      .meta({
        description:
          "Where this bind's final state is also POSTed as a webhook (besides WEBHOOK_URL): an http(s) URL without credentials whose origin is exactly one of WEBHOOK_ALLOWED_ORIGINS; any other is 400 with `field: callback_url`. Not sent to TOP.",
        examples: ["https://backend.example.com/hooks/bindwatch"],
      })
      .optional(),
  })
  .meta({ id: "Registration", description: "A bind attempt to watch: checkbind's business parameters." });

// ---- answers ------------------------------------------------------------------------

const isoTime = (description: string) => z.iso.datetime().meta({ description });

const bindError = z
  .object({
    code: z.enum(BIND_ERROR_CODES).meta({
      description:
        "`upstream_unavailable`: transient trouble, retried with backoff and cleared by the next good answer; `rate_limited`: TOP banned the app key, the whole deployment waits; `upstream_rejected`: TOP refused the request itself (final `failed`).",
    }),
    message: z.string(),
  })
  .meta({ description: "Transient or final trouble with TOP; `null` when there is none." });

const upstream = z
  .object({
    ret_code: z.number().int().nullable().meta({ description: "The answer's `ret_code`." }),
    message: z.string().meta({ description: "The answer's `message`." }),
    request_id: z.string().meta({ description: "TOP's `request_id` of the latest answer." }),
    eagleeye_id: z.string().meta({
      description:
        "The `trace_id` field of TOP's answer: the gateway's own EagleEye tracing id (not the bind's trace_id), which Alibaba support asks for.",
    }),
  })
  .meta({ description: "What the latest checkbind answer said; `null` until the first one." });

/** The state object (SPEC §3). */
export const bindStateSchema = z
  .object({
    trace_id: traceId,
    status: z.enum(BIND_STATUSES).meta({ description: "Every status but `pending` is final." }),
    final: z.boolean().meta({ description: "True for every status but `pending`." }),
    version: z.number().int().min(1).meta({
      description:
        "Grows by one with every change of `status`, `error`, or the upstream's `ret_code` or `message` — not with every poll. It is the SSE event id.",
    }),
    attempts: z.number().int().min(0).meta({ description: "checkbind calls made so far." }),
    created_at: isoTime("When the bind was registered."),
    updated_at: isoTime("When the state was last refreshed (a poll refreshes it without a new version)."),
    expires_at: isoTime("The deadline: BIND_TIMEOUT_MS after registration, when a pending bind becomes `expired`."),
    upstream: upstream.nullable(),
    error: bindError.nullable(),
  })
  .meta({ id: "BindState", description: "The state of one bind attempt, as answered, streamed and POSTed." });

export const registeredSchema = z
  .object({
    trace_id: traceId,
    state: bindStateSchema,
    events_url: z.string().meta({ description: "The SSE stream's path (with `?token=` when tokens are on)." }),
    wait_url: z.string().meta({ description: "A long-poll path from the state's version (with `&token=`)." }),
    token: z
      .string()
      .meta({ description: "The watch token, only when WATCH_TOKEN_SECRET is set; it expires with the trace." })
      .optional(),
  })
  .meta({ id: "Registered", description: "The answer to a registration: where to watch it." });

const errorDetail = <const C extends readonly [ErrorCode, ...ErrorCode[]]>(codes: C) =>
  z.object({
    code: z.enum(codes),
    message: z.string().meta({ description: "For people; never branch on it." }),
    field: z.string().meta({ description: "The request field, parameter or header at fault." }).optional(),
  });

/** The one error shape of the API, `{"error": {"code", "message", "field"?}}`, with every code. */
export const errorBodySchema = z
  .object({ error: errorDetail(ERROR_CODES) })
  .meta({ id: "Error", description: "Every error answer has this shape." });

/** The error shape narrowed to the codes one answer can carry. */
export function errorBodyOf<const C extends readonly [ErrorCode, ...ErrorCode[]]>(...codes: C) {
  return z.object({ error: errorDetail(codes) });
}

export const healthSchema = z
  .object({
    status: z.literal("ok"),
    mode: z.enum(["simulator", "live"]).meta({ description: "Whether checkbind goes to the TOP simulator or to TOP." }),
  })
  .meta({ id: "Health" });

export const readySchema = z.object({ status: z.literal("ready") }).meta({ id: "Ready" });

// ---- webhooks -------------------------------------------------------------------------

const WEBHOOK_EVENT_TYPES = ["bind.bound", "bind.failed", "bind.expired", "bind.cancelled"] as const;

export const webhookPayloadSchema = z
  .object({
    type: z.enum(WEBHOOK_EVENT_TYPES).meta({ description: "`bind.<status>` of the final state." }),
    timestamp: isoTime("When the state became final; the same on every attempt."),
    data: bindStateSchema,
  })
  .meta({ id: "WebhookPayload", description: "A final state, as Standard Webhooks has a message." });

export const webhookHeaders = z.object({
  "webhook-id": z
    .string()
    .regex(/^msg_[A-Za-z0-9_-]{27}$/)
    .meta({
      description:
        "One per final of one registration: the same on every retry, from every instance, for every destination. Deduplicate on it.",
    }),
  "webhook-timestamp": z
    .string()
    .regex(/^\d+$/)
    .meta({ description: "Unix seconds of this attempt; refuse ones too far from your clock." }),
  "webhook-signature": z
    .string()
    .regex(/^v1,[A-Za-z0-9+/]{43}=$/)
    .meta({
      description:
        'v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">, keyed with the base64-decoded part of WEBHOOK_SECRET after `whsec_` (as the Standard Webhooks libraries verify it).',
    }),
});

// ---- the schemas and the domain's types agree ---------------------------------------

type Mutable<T> = T extends object ? { -readonly [K in keyof T]: Mutable<T[K]> } : T;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const agree = <T extends true>(): T => true as T;
agree<Same<z.output<typeof bindStateSchema>, Mutable<BindState>>>();
agree<Same<(typeof WEBHOOK_EVENT_TYPES)[number], WebhookEventType>>();
