import {
  OpenAPIRegistry,
  OpenApiGeneratorV31,
  type ResponseConfig,
  type RouteConfig,
} from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import { BIND_STATUSES } from "../domain/bind.js";
import type { ErrorCode } from "./errors.js";
import {
  bindStateSchema,
  errorBodyOf,
  errorBodySchema,
  eventsHeaders,
  eventsQuery,
  healthSchema,
  readySchema,
  registeredSchema,
  registrationSchema,
  stateQuery,
  traceIdParams,
  webhookHeaders,
  webhookPayloadSchema,
} from "./schemas.js";
import { MAX_BODY_BYTES } from "./validation.js";

/*
 * The OpenAPI 3.1 document of the HTTP API (SPEC §3, "API description"), served at
 * /openapi.json and rendered at /docs. It is generated from the schemas the server
 * validates with (./schemas.ts) by @asteasolutions/zod-to-openapi, the generator under
 * @hono/zod-openapi: the routes keep their own order of checks (body cap, API key,
 * content type, JSON, schema), which @hono/zod-openapi's validators would reorder.
 * Registration order is document order, so the same code gives the same bytes.
 */

type Header = { description: string; required: boolean; schema: Record<string, unknown> };

const RETRY_AFTER: Header = {
  description: "Seconds to wait before trying again.",
  required: true,
  schema: { type: "integer", minimum: 1 },
};
const WWW_AUTHENTICATE: Header = {
  description: "The scheme to authenticate with.",
  required: true,
  schema: { type: "string", const: "Bearer" },
};

function json(description: string, schema: z.ZodType, headers?: Record<string, Header>): ResponseConfig {
  return { description, content: { "application/json": { schema } }, ...(headers ? { headers } : {}) };
}

function error(
  description: string,
  codes: readonly [ErrorCode, ...ErrorCode[]],
  headers?: Record<string, Header>,
): ResponseConfig {
  return json(description, errorBodyOf(...codes), headers);
}

function text(description: string, mediaType: string): ResponseConfig {
  return { description, content: { [mediaType]: { schema: { type: "string" } } } };
}

// ---- answers that several operations share ------------------------------------------

const badTraceId = error(
  "`trace_id` does not match `^[A-Za-z0-9._-]{1,128}$`, or a query parameter is malformed (`field` names it).",
  ["invalid_request"],
);
const unknownTrace = error("Unknown trace_id, or one forgotten after its retention (RESULT_TTL_MS after its end).", [
  "not_found",
]);
const methodNotAllowed = (allowed: string) =>
  error(`This path answers only ${allowed}; any other method gets 405.`, ["method_not_allowed"], {
    Allow: { description: "The methods of this path.", required: true, schema: { type: "string", const: allowed } },
  });
const storeUnavailable = (codes: readonly [ErrorCode, ...ErrorCode[]], more = "") =>
  error(
    `\`unavailable\`: the coordination store (Redis) is unreachable; retry after \`Retry-After\`.${more} At the edge, \`misconfigured\`: the Worker refuses its configuration (naming the variables in \`field\`), on every route and without \`Retry-After\`.`,
    codes,
    {
      "Retry-After": {
        ...RETRY_AFTER,
        required: false,
        description: "Seconds to wait: sent with every code but `misconfigured`.",
      },
    },
  );
const internalFault = error(
  "A fault bindwatch did not expect (a store answering nonsense, a bug): the answer says no more, the log line `unhandled error` has the detail. Retrying may help.",
  ["internal"],
);
const apiKeyMissing = error(
  "API_KEYS is set and no valid `Authorization: Bearer <key>` came with the request.",
  ["unauthorized"],
  {
    "WWW-Authenticate": WWW_AUTHENTICATE,
  },
);
const watchTokenMissing = error(
  "WATCH_TOKEN_SECRET is set and neither a watch token (`?token=` or `Authorization: Bearer`) nor an API key came with the request; `field` is `token`.",
  ["unauthorized"],
  {
    "WWW-Authenticate": WWW_AUTHENTICATE,
  },
);
const watchTokenRefused = error("The watch token is another trace's, expired, or malformed; `field` is `token`.", [
  "forbidden",
]);

const API_KEY = [{ apiKey: [] }, {}];
const WATCH = [{ watchToken: [] }, { watchTokenBearer: [] }, { apiKey: [] }, {}];

// ---- the operations ---------------------------------------------------------------------

const SSE_EXAMPLE = [
  "retry: 2000",
  "",
  "event: pending",
  "id: 2",
  'data: {"trace_id":"213d614316665898871384404d071e","status":"pending","final":false,"version":2,"attempts":1,"created_at":"2026-11-29T10:00:00.000Z","updated_at":"2026-11-29T10:00:02.000Z","expires_at":"2026-11-29T10:03:00.000Z","upstream":{"ret_code":0,"message":"","request_id":"n3c1vk8x7ymf","eagleeye_id":"213cbe9116665898268912730d06de"},"error":null}',
  "",
  ": ping",
  "",
  "event: bound",
  "id: 3",
  'data: {"trace_id":"213d614316665898871384404d071e","status":"bound","final":true,"version":3,"attempts":2,"created_at":"2026-11-29T10:00:00.000Z","updated_at":"2026-11-29T10:00:04.000Z","expires_at":"2026-11-29T10:03:00.000Z","upstream":{"ret_code":0,"message":"","request_id":"z2c8mq0sj4lt","eagleeye_id":"213cbe9116665898442119840d07af"},"error":null}',
  "",
  "",
].join("\n");

/** One event of the stream as an EventSource dispatches it, `data` parsed from its JSON text. */
const bindEventSchema = z
  .object({
    event: z.enum(BIND_STATUSES).meta({ description: "The `event:` line: the state's status." }),
    id: z.string().regex(/^\d+$/).meta({ description: "The `id:` line: the state's version." }),
    // The `data:` line: the state object as one line of JSON.
    data: bindStateSchema,
  })
  .meta({ id: "BindEvent", description: "One event of `GET /v1/binds/{trace_id}/events`." });

const routes: RouteConfig[] = [
  {
    method: "post",
    path: "/v1/binds",
    operationId: "registerBind",
    tags: ["binds"],
    summary: "Register a bind attempt",
    description:
      "Registers the checkbind parameters of one bind attempt and starts polling TOP for it: once per POLL_INTERVAL_MS for the whole deployment, however many watch it. Idempotent: the same trace_id with the same parameters answers 200 with the current state. Needs an API key when API_KEYS is set.",
    security: API_KEY,
    request: {
      body: {
        required: true,
        description: `\`application/json\`, at most ${MAX_BODY_BYTES} bytes.`,
        content: { "application/json": { schema: registrationSchema } },
      },
    },
    responses: {
      "200": json("Already registered with identical parameters: its current state.", registeredSchema),
      "201": json("Registered; polling has started.", registeredSchema),
      "400": error(
        "The body is not JSON, not an object, or not a valid registration; `field` names the first field at fault (a `callback_url` off WEBHOOK_ALLOWED_ORIGINS included).",
        ["invalid_request"],
      ),
      "401": apiKeyMissing,
      "405": methodNotAllowed("POST"),
      "409": error("This trace_id is registered with other parameters; `field` is `trace_id`.", ["conflict"]),
      "413": error(`The body is over ${MAX_BODY_BYTES} bytes.`, ["payload_too_large"]),
      "415": error("The body is not `application/json`.", ["unsupported_media_type"]),
      "429": error(
        "More new registrations than REGISTRATIONS_PER_MINUTE for this API key (an idempotent repeat does not count).",
        ["rate_limited"],
        {
          "Retry-After": RETRY_AFTER,
        },
      ),
      "500": internalFault,
      "503": storeUnavailable(["unavailable", "misconfigured"]),
    },
  },
  {
    method: "get",
    path: "/v1/binds/{trace_id}/events",
    operationId: "watchBindEvents",
    tags: ["binds"],
    summary: "Watch a bind (Server-Sent Events)",
    description:
      "A stream for an `EventSource`. It opens with `retry: <ms>`, sends the current state at once (unless the last event id is at least its version), then every change, each as `event: <status>`, `id: <version>`, `data: <state JSON>` (a `BindEvent`); a comment line `: ping` every HEARTBEAT_MS while nothing else is sent. After the final event (`bound`, `failed`, `expired` or `cancelled`) the server ends the stream; the EventSource reconnects with `Last-Event-ID` and gets 204, which stops it for good.",
    security: WATCH,
    request: { params: traceIdParams, query: eventsQuery, headers: eventsHeaders },
    responses: {
      "200": {
        description: "The stream (`text/event-stream`), ended by the server after the final event.",
        headers: {
          "Cache-Control": {
            description: "The stream is not to be cached or transformed.",
            required: true,
            schema: { type: "string", const: "no-cache, no-transform" },
          },
          "X-Accel-Buffering": {
            description: "Tells nginx not to buffer the stream.",
            required: true,
            schema: { type: "string", const: "no" },
          },
        },
        content: {
          "text/event-stream": {
            schema: {
              type: "string",
              description: "Server-Sent Events: a `retry:` line, `BindEvent`s and `: ping` comments.",
            },
            example: SSE_EXAMPLE,
          },
        },
      },
      "204": {
        description:
          "The bind is final and the last event id is at least its version: nothing more will come (an EventSource stops).",
      },
      "400": badTraceId,
      "401": watchTokenMissing,
      "403": watchTokenRefused,
      "404": unknownTrace,
      "405": methodNotAllowed("GET"),
      "500": internalFault,
      "503": storeUnavailable(
        ["too_many_streams", "unavailable", "misconfigured"],
        " `too_many_streams`: this instance holds MAX_STREAMS streams; retry (perhaps on another instance).",
      ),
    },
  },
  {
    method: "get",
    path: "/v1/binds/{trace_id}",
    operationId: "getBindState",
    tags: ["binds"],
    summary: "Read a bind's state (long-poll)",
    description:
      "Answers the state at once when its version is above `after` or it is final; otherwise holds the request up to `wait` seconds for a change, then answers the state as it is.",
    security: WATCH,
    request: { params: traceIdParams, query: stateQuery },
    responses: {
      "200": json("The state.", bindStateSchema),
      "400": badTraceId,
      "401": watchTokenMissing,
      "403": watchTokenRefused,
      "404": unknownTrace,
      "405": methodNotAllowed("GET, DELETE"),
      "500": internalFault,
      "503": storeUnavailable(["unavailable", "misconfigured"]),
    },
  },
  {
    method: "delete",
    path: "/v1/binds/{trace_id}",
    operationId: "cancelBind",
    tags: ["binds"],
    summary: "Cancel a bind",
    description:
      "Stops polling; watchers receive the final `cancelled` event. A bind already final is answered as it is. Same authorization as POST.",
    security: API_KEY,
    request: { params: traceIdParams },
    responses: {
      "200": json("The final state: `cancelled`, or the final state it had already reached.", bindStateSchema),
      "400": error("`trace_id` does not match `^[A-Za-z0-9._-]{1,128}$`.", ["invalid_request"]),
      "401": apiKeyMissing,
      "404": unknownTrace,
      "405": methodNotAllowed("GET, DELETE"),
      "500": internalFault,
      "503": storeUnavailable(["unavailable", "misconfigured"]),
    },
  },
  {
    method: "get",
    path: "/healthz",
    operationId: "getHealth",
    tags: ["operations"],
    summary: "Liveness",
    description:
      'The process is alive, and whether it answers from the TOP simulator or from TOP. (At the edge a Worker that refuses its configuration answers 503 `{status: "misconfigured", error}` here, as on every route.)',
    responses: { "200": json("Alive.", healthSchema) },
  },
  {
    method: "get",
    path: "/readyz",
    operationId: "getReadiness",
    tags: ["operations"],
    summary: "Readiness",
    description: "Whether the instance can serve: 503 while a configured Redis is unreachable.",
    responses: {
      "200": json("Ready.", readySchema),
      "503": error("The coordination store is unreachable.", ["unavailable"]),
    },
  },
  {
    method: "get",
    path: "/metrics",
    operationId: "getMetrics",
    tags: ["operations"],
    summary: "Prometheus metrics (Node)",
    description:
      "checkbind calls by outcome, call latency, open streams, active polls, events sent, binds finished by status, webhooks. On Node only; the edge has Workers analytics instead.",
    responses: { "200": text("Prometheus text exposition format.", "text/plain") },
  },
  {
    method: "get",
    path: "/v1/client.js",
    operationId: "getBrowserClient",
    tags: ["clients"],
    summary: "The browser client",
    description: "An ES module with `watchBind()`: EventSource with long-poll fallback. Importable from any origin.",
    responses: { "200": text("The module.", "text/javascript") },
  },
  {
    method: "get",
    path: "/openapi.json",
    operationId: "getApiDescription",
    tags: ["clients"],
    summary: "This document",
    description: "The OpenAPI 3.1 description of this API, e.g. for `npx openapi-typescript <url>/openapi.json`.",
    responses: {
      "200": { description: "The document.", content: { "application/json": { schema: { type: "object" } } } },
    },
  },
  {
    method: "get",
    path: "/docs",
    operationId: "getApiReference",
    tags: ["clients"],
    summary: "The API reference page",
    description: "This document rendered as a page; its script is served by bindwatch itself.",
    responses: { "200": text("The page.", "text/html") },
  },
];

const webhook: RouteConfig = {
  method: "post",
  path: "bind.final",
  operationId: "bindFinal",
  tags: ["webhooks"],
  summary: "A bind's final state (to your backend)",
  description:
    "POSTed to WEBHOOK_URL and to the bind's allowlisted `callback_url` when it becomes final, signed as the Standard Webhooks specification has it. A 2xx within WEBHOOK_TIMEOUT_MS confirms delivery; anything else (another status, a timeout, a refused connection, a redirect, which is never followed) is retried with exponential backoff from WEBHOOK_RETRY_MS until WEBHOOK_MAX_AGE_MS after the final. At least once: deduplicate on `webhook-id`.",
  request: {
    headers: webhookHeaders,
    body: { required: true, content: { "application/json": { schema: webhookPayloadSchema } } },
  },
  responses: {
    "2XX": { description: "Delivered: no retry." },
    "410": { description: "Gone: this delivery stops at once (later binds are still sent)." },
    default: { description: "Not delivered: retried with backoff." },
  },
};

const SECURITY_SCHEMES = {
  apiKey: {
    type: "http",
    scheme: "bearer",
    description:
      "One of API_KEYS, as `Authorization: Bearer <key>`. Needed by POST and DELETE when API_KEYS is set; it opens the watch endpoints too.",
  },
  watchToken: {
    type: "apiKey",
    in: "query",
    name: "token",
    description:
      "The `token` of the POST answer, when WATCH_TOKEN_SECRET is set: it opens the watch endpoints of its trace, until the trace is forgotten.",
  },
  watchTokenBearer: {
    type: "http",
    scheme: "bearer",
    description: "The same watch token as `Authorization: Bearer <token>` (for clients that can set headers).",
  },
} as const;

const DESCRIPTION = `bindwatch tells a browser the moment a TmallGenie Inside-IoT device is bound. The app's backend registers a bind attempt; bindwatch polls TOP's \`alibaba.ailabs.iot.device.inside.checkbind.invoke\` once per interval for the whole deployment and streams every change of the bind's state to any number of watchers (Server-Sent Events or long-poll), and POSTs the final state to the backend as a webhook.

The API is the same on Node and at the edge (Cloudflare Workers). Every error is JSON, \`{"error": {"code", "message", "field"?}}\` (\`Error\`), including 404 for unknown paths; nothing a client sends produces a 5xx.`;

/** The definitions of the document, in document order. */
function definitions(): ConstructorParameters<typeof OpenApiGeneratorV31>[0] {
  const registry = new OpenAPIRegistry();
  for (const [name, scheme] of Object.entries(SECURITY_SCHEMES))
    registry.registerComponent("securitySchemes", name, scheme);
  for (const route of routes) registry.registerPath(route);
  registry.registerWebhook(webhook);
  // Named schemas no operation refers to on its own (a zod 4 schema has a `type` of its own,
  // so the generator takes it for a definition: it goes in wrapped).
  return [
    { type: "schema", schema: errorBodySchema },
    { type: "schema", schema: bindEventSchema },
    ...registry.definitions,
  ];
}

/**
 * The OpenAPI 3.1 document of the API, built from the schemas the server validates with.
 * @example const doc = createApiDescription(); doc.paths["/v1/binds"].post.operationId // "registerBind"
 */
export function createApiDescription() {
  return new OpenApiGeneratorV31(definitions()).generateDocument({
    openapi: "3.1.0",
    info: { title: "bindwatch", version: "1", description: DESCRIPTION, license: { name: "MIT", identifier: "MIT" } },
    tags: [
      { name: "binds", description: "Register a bind attempt, watch it, cancel it." },
      { name: "operations", description: "Health, readiness, metrics." },
      { name: "clients", description: "The browser client and this description." },
      { name: "webhooks", description: "What bindwatch sends to your backend." },
    ],
  });
}

let documentText: string | undefined;

/** The document as JSON text, built once per process. */
export function apiDescriptionText(): string {
  documentText ??= JSON.stringify(createApiDescription());
  return documentText;
}
