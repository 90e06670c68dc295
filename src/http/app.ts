import { Scalar } from "@scalar/hono-api-reference";
import type { Context } from "hono";
import { Hono } from "hono";
import { cors } from "hono/cors";
import type { BindState } from "../domain/bind.js";
import type { Logger } from "../domain/logger.js";
import { silentLogger } from "../domain/logger.js";
import { parseEventId } from "../domain/sse.js";
import type { BindService } from "../watch/bind-service.js";
import { CoordinatorUnavailableError } from "../watch/coordinator.js";
import { bearerOf, createWatchToken, matchesAnyKey, quotaKeyOf, redactUrl, verifyWatchToken } from "./access.js";
import { apiDescriptionText } from "./api-description.js";
import { type BodyReader, declaredLength, parseJson, readWebBody } from "./body.js";
import { jsonError } from "./errors.js";
import { eventsQuery, stateQuery, traceIdParams } from "./schemas.js";
import {
  createBodyChannel,
  createSseStream,
  SSE_HEADERS,
  type SseChannel,
  type SseSettings,
  type StreamRegistry,
} from "./sse.js";
import { isValidTraceId, MAX_BODY_BYTES, numberOf, parseParameters, parseRegistration } from "./validation.js";

/**
 * The reference page at /docs (Scalar), offline: its script comes from bindwatch, no
 * fonts are fetched, and the page offers nothing that calls a service of Scalar's (the
 * agent chat would query Scalar's registry through its proxy as soon as the page loads).
 */
const API_REFERENCE = {
  url: "/openapi.json",
  cdn: "/docs/scalar.js",
  pageTitle: "bindwatch API",
  withDefaultFonts: false,
  showDeveloperTools: "never",
  hideClientButton: true,
  telemetry: false,
  agent: { disabled: true },
  defaultOpenAllTags: true,
  _integration: "hono",
} as const;

/** The response an adapter must not write: the handler wrote it to the socket itself (@hono/node-server). */
const ALREADY_SENT = () => new Response(null, { headers: { "x-hono-already-sent": "1" } });

export interface HttpConfig {
  readonly heartbeatMs: number;
  /** The `retry` field sent at the start of every stream. */
  readonly sseRetryMs: number;
  readonly maxStreams: number;
  /** Bytes a slow stream may queue before it is dropped. */
  readonly maxQueuedBytes?: number;
}

/** Access control (SPEC §5, §7); every part optional, open when unset. */
export interface AccessConfig {
  /** When non-empty, POST and DELETE need `Authorization: Bearer <key>`. */
  readonly apiKeys: readonly string[];
  /** When set, POST returns a watch token and the watch endpoints require it. */
  readonly watchTokenSecret?: string | undefined;
  /** How long a token outlives its trace's deadline (RESULT_TTL_MS: the final state stays readable). */
  readonly tokenGraceMs: number;
  /** Exact browser origins allowed by CORS; `*` allows any origin without credentials. */
  readonly corsOrigins: readonly string[];
  /** New registrations per API key and minute (REGISTRATIONS_PER_MINUTE); unset for no limit. */
  readonly registrationsPerMinute?: number | undefined;
  /** WEBHOOK_ALLOWED_ORIGINS: the exact origins a bind's callback_url may use. */
  readonly callbackOrigins?: readonly string[];
}

export interface HttpObserver {
  onEventSent?(): void;
}

export interface AppDeps {
  readonly service: BindService;
  readonly streams: StreamRegistry;
  readonly config: HttpConfig;
  readonly logger?: Logger;
  readonly observer?: HttpObserver;
  readonly access?: AccessConfig;
  /** What `/healthz` says this instance is: answering from the TOP simulator or from TOP. */
  readonly mode: "simulator" | "live";
  /**
   * The deployment's clock for watch-token expiry (tokens expire with their trace, whose
   * times come from the store's clock): the coordinator's `now`. Default `Date.now`.
   */
  readonly now?: () => number;
  /** `/readyz`: false while a configured store is unreachable. */
  readonly isReady?: () => Promise<boolean>;
  /**
   * Opens an SSE response written straight to the transport (Node: the socket's
   * ServerResponse), sending `headers` with status 200; `null` to use a Web body.
   */
  readonly openSseChannel?: (c: Context, headers: Headers) => SseChannel | null;
  /** Reads a request header (lower-case `name`) as `c.req.header` does, more cheaply on a runtime. */
  readonly readHeader?: (c: Context, name: string) => string | undefined;
  /** Reads the request body up to a limit, more cheaply on a runtime than through `c.req.raw.body`. */
  readonly readBody?: BodyReader;
  /** The browser client module's source, served at `/v1/client.js` when given. */
  readonly clientScript?: string;
  /**
   * The API reference page's script (the build's dist/assets/scalar.js), answered at
   * `/docs/scalar.js`; `/docs` is served when given.
   */
  readonly referenceScript?: () => Promise<Response | undefined>;
  /** Extra routes mounted before the API (the simulator's demo page and controls). */
  readonly extend?: (app: Hono) => void;
}

/**
 * The bindwatch HTTP API (SPEC §3) as a Hono app, the same on Node and at the edge.
 * @example serve({ fetch: createApp({ service, streams, config }).fetch, port: 8787 });
 */
export function createApp(deps: AppDeps): Hono {
  const { service, streams, config } = deps;
  const logger = deps.logger ?? silentLogger;
  const maxQueuedBytes = deps.config.maxQueuedBytes ?? 256 * 1024;
  const now = deps.now ?? Date.now;
  const header = deps.readHeader ?? ((c: Context, name: string) => c.req.header(name));
  const readBody = deps.readBody ?? readWebBody;
  const sseSettings: SseSettings = {
    retryMs: config.sseRetryMs,
    heartbeatMs: config.heartbeatMs,
    maxQueuedBytes,
    registry: streams,
    ...(deps.observer?.onEventSent ? { onEvent: deps.observer.onEventSent } : {}),
  };
  const access: AccessConfig = deps.access ?? { apiKeys: [], tokenGraceMs: 0, corsOrigins: [] };
  const app = new Hono();

  app.use(async (c, next) => {
    const started = Date.now();
    // Watch tokens may travel in URLs; keep them out of Referer headers. Set before the
    // handler runs, so a stream written straight to the socket carries it too.
    c.header("referrer-policy", "no-referrer");
    await next();
    const traceId = /^\/v1\/binds\/([^/]+)/.exec(c.req.path)?.[1];
    logger.debug(
      {
        method: c.req.method,
        url: redactUrl(c.req.url),
        status: c.res.status,
        ms: Date.now() - started,
        ...(traceId && isValidTraceId(traceId) ? { trace_id: traceId } : {}),
      },
      "request",
    );
  });
  if (access.corsOrigins.length > 0) {
    const anyOrigin = access.corsOrigins.includes("*");
    app.use(
      cors({
        // Exact origins only; credentials only then, never with a wildcard (unlike Nchan's default).
        origin: anyOrigin ? "*" : (origin) => (access.corsOrigins.includes(origin) ? origin : null),
        allowMethods: ["GET", "POST", "DELETE", "OPTIONS"],
        allowHeaders: ["Content-Type", "Authorization", "Last-Event-ID"],
        exposeHeaders: ["Retry-After"],
        credentials: !anyOrigin,
        maxAge: 600,
      }),
    );
  }

  /** POST and DELETE: an API key when keys are configured. */
  const requireApiKey = (c: Context): Response | null => {
    if (access.apiKeys.length === 0) return null;
    const key = bearerOf(header(c, "authorization"));
    if (key && matchesAnyKey(key, access.apiKeys)) return null;
    return jsonError(c, 401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)", undefined, {
      "www-authenticate": "Bearer",
    });
  };

  /** Watch endpoints: the trace's watch token (or an API key) when tokens are configured. */
  const requireWatchToken = (c: Context, traceId: string): Response | null => {
    const secret = access.watchTokenSecret;
    if (!secret) return null;
    const bearer = bearerOf(header(c, "authorization"));
    if (bearer && access.apiKeys.length > 0 && matchesAnyKey(bearer, access.apiKeys)) return null;
    const token = c.req.query("token") ?? bearer;
    if (!token) {
      return jsonError(
        c,
        401,
        "unauthorized",
        "a watch token is required (?token= or Authorization: Bearer)",
        "token",
        {
          "www-authenticate": "Bearer",
        },
      );
    }
    const check = verifyWatchToken(secret, traceId, token, now());
    if (check.ok) return null;
    return jsonError(c, 403, "forbidden", `the watch token is ${check.reason} for this trace`, "token");
  };

  app.onError((err, c) => {
    if (err instanceof CoordinatorUnavailableError) {
      logger.warn(
        { err: { name: err.name, message: err.message }, path: c.req.path },
        "request failed: store unavailable",
      );
      return jsonError(c, 503, "unavailable", "the coordination store is unavailable; try again", undefined, {
        "retry-after": "1",
      });
    }
    logger.error({ err, path: c.req.path }, "unhandled error");
    return jsonError(c, 500, "internal", "internal error");
  });
  app.notFound((c) => jsonError(c, 404, "not_found", `no route for ${c.req.method} ${c.req.path}`));

  app.get("/healthz", (c) => c.json({ status: "ok", mode: deps.mode }));
  app.get("/readyz", async (c) => {
    const ready = deps.isReady ? await deps.isReady().catch(() => false) : true;
    return ready
      ? c.json({ status: "ready" })
      : jsonError(c, 503, "unavailable", "the coordination store is unreachable");
  });

  app.get("/openapi.json", (c) =>
    c.body(apiDescriptionText(), 200, {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-cache",
      // Tools on other origins (editors, code generators in a browser) may read it.
      "access-control-allow-origin": "*",
    }),
  );
  const referenceScript = deps.referenceScript;
  if (referenceScript !== undefined) {
    app.get("/docs", Scalar(API_REFERENCE));
    app.get("/docs/scalar.js", async (c) => {
      const script = await referenceScript();
      if (!script) return jsonError(c, 404, "not_found", "the API reference script is not built (npm run build)");
      return c.body(script.body ?? "", 200, {
        "content-type": "text/javascript; charset=utf-8",
        "cache-control": "public, max-age=300",
      });
    });
  }

  deps.extend?.(app);

  const clientScript = deps.clientScript;
  if (clientScript !== undefined) {
    app.get("/v1/client.js", (c) =>
      c.body(clientScript, 200, {
        "content-type": "text/javascript; charset=utf-8",
        "cache-control": "public, max-age=300",
        // A page on another origin may import it as a module.
        "access-control-allow-origin": "*",
      }),
    );
  }

  const traceIdOf = (c: Context): string | Response => {
    const params = parseParameters(traceIdParams, { trace_id: c.req.param("trace_id") ?? "" });
    return params.ok ? params.value.trace_id : jsonError(c, 400, "invalid_request", params.message, params.field);
  };

  const describe = (state: BindState) => {
    const base = `/v1/binds/${encodeURIComponent(state.trace_id)}`;
    const secret = access.watchTokenSecret;
    if (!secret) {
      return {
        trace_id: state.trace_id,
        state,
        events_url: `${base}/events`,
        wait_url: `${base}?wait=30&after=${state.version}`,
      };
    }
    const token = createWatchToken(secret, state.trace_id, Date.parse(state.expires_at) + access.tokenGraceMs);
    return {
      trace_id: state.trace_id,
      state,
      events_url: `${base}/events?token=${token}`,
      wait_url: `${base}?wait=30&after=${state.version}&token=${token}`,
      token,
    };
  };

  /** The registration body: its text, `null` past MAX_BODY_BYTES, `undefined` if it broke off. */
  const readRegistrationBody = (c: Context) => readBody(c, MAX_BODY_BYTES).catch(() => undefined);

  app.post("/v1/binds", async (c) => {
    const tooLarge = () => jsonError(c, 413, "payload_too_large", `the body must be at most ${MAX_BODY_BYTES} bytes`);
    // A declared length over the limit is refused first; a chunked body is read (up to the
    // limit) before anything else is checked, as hono/body-limit did.
    const declared = declaredLength(header(c, "content-length"), header(c, "transfer-encoding"));
    if (declared !== null && declared > MAX_BODY_BYTES) return tooLarge();
    const early = declared === null ? await readRegistrationBody(c) : undefined;
    if (early === null) return tooLarge();
    const denied = requireApiKey(c);
    if (denied) return denied;
    const type = header(c, "content-type") ?? "";
    if (!/^application\/json\s*(;|$)/i.test(type)) {
      return jsonError(c, 415, "unsupported_media_type", "the body must be application/json", "content-type");
    }
    const text = declared === null ? early : await readRegistrationBody(c);
    if (text === null) return tooLarge();
    const body = text === undefined ? undefined : parseJson(text);
    if (body === undefined) return jsonError(c, 400, "invalid_request", "the body is not valid JSON");
    const parsed = parseRegistration(body, { callbackOrigins: access.callbackOrigins ?? [] });
    if (!parsed.ok) return jsonError(c, 400, "invalid_request", parsed.message, parsed.field);
    const perMinute = access.registrationsPerMinute;
    const quota =
      perMinute === undefined
        ? undefined
        : { key: quotaKeyOf(access.apiKeys.length > 0 ? bearerOf(header(c, "authorization")) : null), perMinute };
    const result = await service.register(parsed.value, quota);
    if (result.kind === "rate_limited") {
      const seconds = Math.max(1, Math.ceil(result.retryAfterMs / 1000));
      return jsonError(
        c,
        429,
        "rate_limited",
        `at most ${perMinute} new registrations a minute for this API key; retry in ${seconds} s`,
        undefined,
        { "retry-after": String(seconds) },
      );
    }
    if (result.kind === "conflict") {
      return jsonError(c, 409, "conflict", "this trace_id is registered with different parameters", "trace_id");
    }
    logger.info({ trace_id: parsed.value.trace_id, created: result.kind === "created" }, "bind registered");
    return c.json(describe(result.state), result.kind === "created" ? 201 : 200);
  });

  app.get("/v1/binds/:trace_id/events", async (c) => {
    const traceId = traceIdOf(c);
    if (typeof traceId !== "string") return traceId;
    const denied = requireWatchToken(c, traceId);
    if (denied) return denied;
    const query = parseParameters(eventsQuery, c.req.query());
    if (!query.ok) return jsonError(c, 400, "invalid_request", query.message, query.field);
    // A malformed Last-Event-ID header counts as absent: a 4xx would stop an EventSource for good.
    const lastEventId = parseEventId(header(c, "last-event-id")) ?? numberOf(query.value.last_event_id);

    if (streams.size >= config.maxStreams) {
      return jsonError(
        c,
        503,
        "too_many_streams",
        "this instance holds its maximum of streams; retry shortly",
        undefined,
        {
          "retry-after": "5",
        },
      );
    }
    const current = await service.getState(traceId);
    if (!current) return jsonError(c, 404, "not_found", "unknown or forgotten trace_id", "trace_id");
    if (current.final && lastEventId >= current.version) return c.body(null, 204);
    // Hono answers HEAD by running this GET handler and dropping the body unread: a stream
    // opened here would stay attached (and keep the trace polled) with nobody to close it.
    if (c.req.method === "HEAD") return c.body(null, 200, SSE_HEADERS);

    // Headers that middleware (CORS, Referrer-Policy) put on the response so far go out too.
    const headers = new Headers(c.res.headers);
    for (const [name, value] of Object.entries(SSE_HEADERS)) headers.set(name, value);
    const direct = deps.openSseChannel?.(c, headers);
    const web = direct ? null : createBodyChannel(c.req.raw.signal);
    const stream = createSseStream(direct ?? (web as NonNullable<typeof web>).channel, sseSettings);
    try {
      const attachment = await service.attach(traceId, lastEventId, stream);
      if (!attachment) {
        if (direct) {
          // The headers are out already: end the stream; the EventSource reconnects and gets the 404.
          stream.end();
          return ALREADY_SENT();
        }
        stream.end();
        return jsonError(c, 404, "not_found", "unknown or forgotten trace_id", "trace_id");
      }
      // Detached at once if the stream ended during attach (final state, client gone).
      stream.detachOnClose(attachment);
      if (attachment.state.final && lastEventId >= attachment.state.version) stream.end();
    } catch (err) {
      stream.end();
      throw err;
    }
    return web ? new Response(web.body, { status: 200, headers }) : ALREADY_SENT();
  });

  app.get("/v1/binds/:trace_id", async (c) => {
    const traceId = traceIdOf(c);
    if (typeof traceId !== "string") return traceId;
    const denied = requireWatchToken(c, traceId);
    if (denied) return denied;
    const query = parseParameters(stateQuery, c.req.query());
    if (!query.ok) return jsonError(c, 400, "invalid_request", query.message, query.field);
    const { wait, after } = query.value;
    const state = await service.waitForChange(traceId, numberOf(after), numberOf(wait) * 1000, c.req.raw.signal);
    if (!state) return jsonError(c, 404, "not_found", "unknown or forgotten trace_id", "trace_id");
    return c.json(state, 200, { "cache-control": "no-store" });
  });

  app.delete("/v1/binds/:trace_id", async (c) => {
    const traceId = traceIdOf(c);
    if (typeof traceId !== "string") return traceId;
    const denied = requireApiKey(c);
    if (denied) return denied;
    const state = await service.cancel(traceId);
    if (!state) return jsonError(c, 404, "not_found", "unknown or forgotten trace_id", "trace_id");
    logger.info({ trace_id: traceId, status: state.status }, "bind cancelled");
    return c.json(state);
  });

  const methodNotAllowed = (allowed: string) => (c: Context) =>
    jsonError(c, 405, "method_not_allowed", `allowed: ${allowed}`, undefined, { allow: allowed });
  app.all("/v1/binds", methodNotAllowed("POST"));
  app.all("/v1/binds/:trace_id/events", methodNotAllowed("GET"));
  app.all("/v1/binds/:trace_id", methodNotAllowed("GET, DELETE"));

  return app;
}
