import SwaggerParser from "@apidevtools/swagger-parser";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { apiDescriptionText, createApiDescription } from "../../src/http/api-description.js";
import { createApp } from "../../src/http/app.js";
import { eventsQuery, stateQuery, traceIdParams } from "../../src/http/schemas.js";
import { createStreamRegistry } from "../../src/http/sse.js";
import { parseParameters, parseRegistration } from "../../src/http/validation.js";
import { createBindService } from "../../src/watch/bind-service.js";
import { createMemoryCoordinator } from "../../src/watch/memory-coordinator.js";
import { type ApiDocument, createSchemaChecker, operationsOf, type Schema } from "../support/api-description.js";
import { WAITING } from "../support/outcomes.js";

/*
 * The OpenAPI document itself: valid OpenAPI 3.1 (swagger-parser), the same bytes on
 * every build, every endpoint of SPEC §3 in it, and its request schemas saying what the
 * server accepts. That every documented answer is what the server answers is
 * test/integration/api-description.test.ts, on a real socket.
 */

const doc = createApiDescription() as unknown as ApiDocument;

/** The operations of SPEC §3 (and the two of the description itself). */
const SPEC_OPERATIONS = [
  "POST /v1/binds",
  "GET /v1/binds/{trace_id}/events",
  "GET /v1/binds/{trace_id}",
  "DELETE /v1/binds/{trace_id}",
  "GET /healthz",
  "GET /readyz",
  "GET /metrics",
  "GET /v1/client.js",
  "GET /openapi.json",
  "GET /docs",
];

function parameterSchema(op: string, name: string): Schema {
  const operation = operationsOf(doc).find(([key]) => key === op)?.[1];
  const parameter = operation?.parameters?.find((p) => p.name === name);
  if (!parameter) throw new Error(`${op} documents no parameter ${name}`);
  return parameter.schema;
}

describe("the API description", () => {
  it("is a valid OpenAPI 3.1 document (swagger-parser)", async () => {
    const api = await SwaggerParser.validate(structuredClone(createApiDescription()) as never);
    expect(api).toMatchObject({ openapi: "3.1.0" });
  });

  it("is the same document on every build, and /openapi.json serves exactly it", async () => {
    expect(JSON.stringify(createApiDescription())).toBe(JSON.stringify(createApiDescription()));
    const service = createBindService({
      coordinator: createMemoryCoordinator({ retentionMs: 1000, resultTtlMs: 1000, upstreamQps: 10 }),
      client: { checkbind: async () => WAITING },
      config: { pollIntervalMs: 100, pollLingerMs: 100, bindTimeoutMs: 1000, resultTtlMs: 1000 },
    });
    const app = createApp({
      service,
      streams: createStreamRegistry(),
      mode: "live",
      config: { heartbeatMs: 60_000, sseRetryMs: 1000, maxStreams: 10 },
    });
    const res = await app.request("/openapi.json");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.text()).toBe(apiDescriptionText());
    expect(JSON.parse(apiDescriptionText())).toEqual(createApiDescription());
    await service.shutdown();
  });

  it("has every endpoint of SPEC §3 with its operation, parameters and answers", () => {
    expect(operationsOf(doc).map(([key]) => key)).toEqual(SPEC_OPERATIONS);
    for (const [key, op] of operationsOf(doc)) {
      expect(op.operationId, key).toMatch(/^[a-z][A-Za-z]+$/);
      expect(Object.keys(op.responses).length, key).toBeGreaterThan(0);
    }
    const names = (op: string) =>
      operationsOf(doc)
        .find(([k]) => k === op)?.[1]
        .parameters?.map((p) => p.name);
    expect(names("GET /v1/binds/{trace_id}/events")).toEqual(["trace_id", "last_event_id", "token", "last-event-id"]);
    expect(names("GET /v1/binds/{trace_id}")).toEqual(["trace_id", "wait", "after", "token"]);
    expect(names("DELETE /v1/binds/{trace_id}")).toEqual(["trace_id"]);
    // The body, callback_url included; unknown fields are refused.
    const registration = doc.components.schemas.Registration;
    expect(registration).toMatchObject({ additionalProperties: false });
    expect(Object.keys(registration?.properties as object)).toContain("callback_url");
    expect(Object.keys(doc.components.securitySchemes ?? {})).toEqual(["apiKey", "watchToken", "watchTokenBearer"]);
    // The events endpoint is a text/event-stream, and every status of the stream is an event name.
    const events = operationsOf(doc).find(([k]) => k === "GET /v1/binds/{trace_id}/events")?.[1];
    expect(Object.keys(events?.responses["200"]?.content ?? {})).toEqual(["text/event-stream"]);
    expect(doc.components.schemas.BindEvent).toBeDefined();
    // The webhook: its body and the three Standard Webhooks headers.
    const webhook = doc.webhooks?.["bind.final"]?.post;
    expect(webhook?.parameters?.map((p) => [p.name, p.in, p.required])).toEqual([
      ["webhook-id", "header", true],
      ["webhook-timestamp", "header", true],
      ["webhook-signature", "header", true],
    ]);
    expect(webhook?.requestBody?.content["application/json"]?.schema).toEqual({
      $ref: "#/components/schemas/WebhookPayload",
    });
    expect(Object.keys(webhook?.responses ?? {}).sort()).toEqual(["2XX", "410", "default"]);
  });

  it("documents the path and query parameters exactly as the server checks them", () => {
    const cases = [
      { op: "GET /v1/binds/{trace_id}", name: "trace_id", schema: traceIdParams },
      { op: "GET /v1/binds/{trace_id}", name: "wait", schema: stateQuery },
      { op: "GET /v1/binds/{trace_id}", name: "after", schema: stateQuery },
      { op: "GET /v1/binds/{trace_id}/events", name: "last_event_id", schema: eventsQuery },
    ];
    const values = fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.stringMatching(/^\d{0,3}(\.\d{0,4})?$/),
      fc.stringMatching(/^[A-Za-z0-9._!-]{0,130}$/),
      fc.constantFrom(
        "",
        "0",
        "60",
        "60.0",
        "60.000",
        "60.001",
        "61",
        "59.999",
        "05",
        "1e3",
        "9".repeat(15),
        "9".repeat(16),
      ),
    );
    for (const { op, name, schema } of cases) {
      const pattern = new RegExp(parameterSchema(op, name).pattern as string);
      fc.assert(
        fc.property(values, (value) => {
          const accepted = parseParameters(schema, { [name]: value }).ok;
          expect(accepted, `${name}=${JSON.stringify(value)}`).toBe(pattern.test(value));
        }),
        { numRuns: 600 },
      );
    }
  });

  it("documents the registration body as the server validates it", () => {
    const check = createSchemaChecker(doc);
    const registration = doc.components.schemas.Registration as Schema;
    const field = fc.oneof(fc.string({ maxLength: 300 }), fc.integer(), fc.constant(null), fc.object({ maxDepth: 1 }));
    const body = fc.record(
      {
        trace_id: fc.oneof(fc.stringMatching(/^[A-Za-z0-9._-]{1,130}$/), field),
        open_id: field,
        product_key: fc.string({ minLength: 1, maxLength: 5 }),
        user_type: fc.oneof(fc.constant("ilop"), field),
        device_name: field,
        params: fc.oneof(fc.object({ maxDepth: 2 }), fc.array(fc.integer()), field),
        typo: fc.string(),
      },
      { requiredKeys: ["product_key"] },
    );
    fc.assert(
      fc.property(body, (value) => {
        // callback_url depends on WEBHOOK_ALLOWED_ORIGINS and params' depth is capped: both left out here.
        const errors = check(registration, value);
        expect(parseRegistration(value).ok, `${JSON.stringify(value)}: ${errors.join("; ")}`).toBe(errors.length === 0);
      }),
      { numRuns: 1500 },
    );
  });
});
