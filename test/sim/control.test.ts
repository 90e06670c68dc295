import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { createSimulatorControl, parseScriptSpec } from "../../src/sim/control.js";
import { createTopSimulator, type TopSimulator } from "../../src/sim/gateway.js";

/** JSON text for specs with a `then` field (an object literal with `then` reads as a thenable). */
function json(text: string): unknown {
  return JSON.parse(text);
}

function setup(): { sim: TopSimulator; app: Hono } {
  const sim = createTopSimulator({ appKey: "k", appSecret: "s" });
  const app = new Hono();
  app.route("/sim", createSimulatorControl(sim));
  return { sim, app };
}

function put(app: Hono, traceId: string, body: unknown, contentType = "application/json"): Promise<Response> {
  return Promise.resolve(
    app.request(`/sim/traces/${traceId}/script`, {
      method: "PUT",
      headers: { "content-type": contentType },
      body: typeof body === "string" ? body : JSON.stringify(body),
    }),
  );
}

interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

describe("parseScriptSpec", () => {
  it("bound after N: N pending steps, then bound", () => {
    const r = parseScriptSpec({ outcome: "bound", after: 2 });
    expect(r.ok && r.script).toMatchObject({
      steps: [{ kind: "pending" }, { kind: "pending" }],
      thereafter: { kind: "bound" },
    });
  });

  it("bound defaults to three pending polls", () => {
    const r = parseScriptSpec({ outcome: "bound" });
    expect(r.ok && r.script.steps).toHaveLength(3);
  });

  it("failed: result=false with the code and message for good", () => {
    const r = parseScriptSpec({ outcome: "failed", after: 1, ret_code: 1001, message: "device offline" });
    expect(r.ok && r.script).toMatchObject({
      steps: [{ kind: "pending" }],
      thereafter: { kind: "not_ok", retCode: 1001, message: "device offline" },
    });
  });

  it("trouble of each kind, then the chosen step", () => {
    expect(parseScriptSpec({ outcome: "trouble", kind: "http_error", count: 2 })).toMatchObject({
      ok: true,
      script: { steps: [{ kind: "http_error", status: 503 }, { kind: "http_error" }], thereafter: { kind: "bound" } },
    });
    expect(
      parseScriptSpec(json('{"outcome":"trouble","kind":"ban","count":1,"ban_seconds":5,"then":"pending"}')),
    ).toMatchObject({ ok: true, script: { steps: [{ kind: "ban", seconds: 5 }], thereafter: { kind: "pending" } } });
    expect(parseScriptSpec({ outcome: "trouble", kind: "isp_error", count: 1 })).toMatchObject({
      ok: true,
      script: { steps: [{ kind: "isp_error" }] },
    });
    expect(parseScriptSpec({ outcome: "trouble", kind: "garbage", count: 0 })).toMatchObject({
      ok: true,
      script: { steps: [] },
    });
  });

  it("slow, rejected and never", () => {
    expect(parseScriptSpec({ outcome: "slow", delay_ms: 2500, count: 2 })).toMatchObject({
      ok: true,
      script: {
        steps: [
          { kind: "pending", delayMs: 2500 },
          { kind: "pending", delayMs: 2500 },
        ],
        thereafter: { kind: "bound" },
      },
    });
    expect(parseScriptSpec({ outcome: "rejected" })).toMatchObject({
      ok: true,
      script: { steps: [], thereafter: { kind: "reject", code: 11, subCode: "isv.permission-api-package-limit" } },
    });
    expect(parseScriptSpec({ outcome: "never" })).toMatchObject({
      ok: true,
      script: { steps: [], thereafter: { kind: "pending" } },
    });
  });

  const invalid: ReadonlyArray<[string, unknown, string | undefined]> = [
    ["not an object", [1, 2], undefined],
    ["null", null, undefined],
    ["an unknown outcome", { outcome: "maybe" }, "outcome"],
    ["no outcome", { after: 1 }, "outcome"],
    ["a negative after", { outcome: "bound", after: -1 }, "after"],
    ["a fractional after", { outcome: "bound", after: 1.5 }, "after"],
    ["a string after", { outcome: "bound", after: "3" }, "after"],
    ["a huge after", { outcome: "bound", after: 1e9 }, "after"],
    ["failed without ret_code", { outcome: "failed", after: 1 }, "ret_code"],
    ["a non-string message", { outcome: "failed", ret_code: 1, message: 5 }, "message"],
    ["a too long message", { outcome: "failed", ret_code: 1, message: "x".repeat(257) }, "message"],
    ["trouble without kind", { outcome: "trouble", count: 1 }, "kind"],
    ["an unknown trouble kind", { outcome: "trouble", kind: "fire" }, "kind"],
    ["an unknown then", json('{"outcome":"trouble","kind":"garbage","then":"failed"}'), "then"],
    ["status on a non-http trouble", { outcome: "trouble", kind: "garbage", status: 500 }, "status"],
    ["a 2xx http_error status", { outcome: "trouble", kind: "http_error", status: 200 }, "status"],
    ["ban_seconds of 0", { outcome: "trouble", kind: "ban", ban_seconds: 0 }, "ban_seconds"],
    ["slow without delay_ms", { outcome: "slow" }, "delay_ms"],
    ["an unknown field", { outcome: "never", after: 2 }, "after"],
    ["a typo", { outcome: "failed", retCode: 1 }, "retCode"],
  ];
  for (const [name, value, field] of invalid) {
    it(`rejects ${name}`, () => {
      const r = parseScriptSpec(value);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.field).toBe(field);
        expect(r.message.length).toBeGreaterThan(0);
      }
    });
  }
});

describe("simulator control API", () => {
  it("PUT sets the script and answers the trace report", async () => {
    const { sim, app } = setup();
    const res = await put(app, "trace-1", { outcome: "failed", after: 2, ret_code: 1001, message: "offline" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      trace_id: "trace-1",
      scripted: true,
      call_count: 0,
      step_index: 0,
      next_step: "pending",
      script: { label: "result=false ret_code=1001 after 2 pending polls", steps: ["pending", "pending"] },
      calls: [],
    });
    expect(sim.getTrace("trace-1").script.thereafter).toEqual({ kind: "not_ok", retCode: 1001, message: "offline" });
  });

  it("GET shows the script and the calls so far", async () => {
    const { app } = setup();
    const before = await app.request("/sim/traces/unknown-trace");
    expect(before.status).toBe(200);
    expect(await before.json()).toMatchObject({ trace_id: "unknown-trace", scripted: false, call_count: 0 });

    await put(app, "t2", { outcome: "trouble", kind: "ban", count: 1 });
    const res = await app.request("/sim/traces/t2");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(await res.json()).toMatchObject({
      script: json('{"steps":["ban 2s"],"then":"bound"}'),
      next_step: "ban 2s",
      max_in_flight: 0,
      min_start_gap_ms: null,
    });
  });

  it("DELETE returns the trace to the default script", async () => {
    const { sim, app } = setup();
    await put(app, "t3", { outcome: "never" });
    const res = await app.request("/sim/traces/t3/script", { method: "DELETE" });
    expect(res.status).toBe(200);
    expect(sim.getTrace("t3").scripted).toBe(false);
  });

  it("GET /stats answers the gateway totals", async () => {
    const { app } = setup();
    const res = await app.request("/sim/stats");
    expect(await res.json()).toMatchObject({ requests: 0, checkbindCalls: 0, rejected: {} });
  });

  it("400 names the field of a bad script", async () => {
    const { sim, app } = setup();
    const res = await put(app, "t4", { outcome: "failed", after: 2 });
    expect(res.status).toBe(400);
    const body = (await res.json()) as ErrorBody;
    expect(body.error).toMatchObject({ code: "invalid_request", field: "ret_code" });
    expect(sim.getTrace("t4").scripted).toBe(false);
  });

  it("400 on a body that is not JSON", async () => {
    const { app } = setup();
    const res = await put(app, "t5", "{outcome:");
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorBody).error.code).toBe("invalid_request");
  });

  it("400 on a bad trace id", async () => {
    const { app } = setup();
    const res = await put(app, "bad%20id", { outcome: "never" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorBody).error).toMatchObject({ code: "invalid_request", field: "trace_id" });
    const get = await app.request(`/sim/traces/${"x".repeat(129)}`);
    expect(get.status).toBe(400);
  });

  it("415 on a body that is not application/json", async () => {
    const { app } = setup();
    const res = await put(app, "t6", '{"outcome":"never"}', "text/plain");
    expect(res.status).toBe(415);
    expect(((await res.json()) as ErrorBody).error.code).toBe("unsupported_media_type");
  });

  it("413 on an oversized body", async () => {
    const { app } = setup();
    const res = await put(app, "t7", { outcome: "failed", ret_code: 1, message: "x".repeat(20_000) });
    expect(res.status).toBe(413);
    expect(((await res.json()) as ErrorBody).error.code).toBe("payload_too_large");
  });

  it("404 JSON for unknown routes", async () => {
    const { app } = setup();
    const res = await app.request("/sim/nothing");
    expect(res.status).toBe(404);
    expect(((await res.json()) as ErrorBody).error.code).toBe("not_found");
  });
});
