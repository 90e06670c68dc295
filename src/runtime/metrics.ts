import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { HttpObserver } from "../http/app.js";
import type { ServiceObserver, ServiceStats } from "../watch/bind-service.js";

/**
 * How often the event-loop delay is sampled for the `bindwatch_process_eventloop_lag_*`
 * series. prom-client's default of 10 ms (perf_hooks.monitorEventLoopDelay in its
 * lib/metrics/eventLoopLag.js) wakes the loop 100 times a second: about 8 ms of CPU a
 * second on an idle instance, all of its idle cost, measured on the bench machine. Every
 * 100 ms it is about 1 ms/s, and a loop blocked for longer still shows in the
 * percentiles (the block delays the next sample by its length).
 */
export const EVENT_LOOP_SAMPLE_MS = 100;

/**
 * The Prometheus series of SPEC §3. No series is labelled by trace_id: that would
 * grow without bound; outcomes and statuses are small fixed sets.
 */
export function createMetrics(sources: { streams: () => number; stats: () => ServiceStats }) {
  const registry = new Registry();
  collectDefaultMetrics({
    register: registry,
    prefix: "bindwatch_process_",
    eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
  });

  const calls = new Counter({
    name: "bindwatch_checkbind_calls_total",
    help: "Checkbind calls made by this instance, by classified outcome.",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: "bindwatch_checkbind_duration_seconds",
    help: "Checkbind call latency, from request to classified answer.",
    labelNames: ["outcome"] as const,
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  new Gauge({
    name: "bindwatch_open_streams",
    help: "SSE streams open on this instance.",
    registers: [registry],
    collect() {
      this.set(sources.streams());
    },
  });
  new Gauge({
    name: "bindwatch_active_polls",
    help: "Traces this instance is polling now (holding the poll lease).",
    registers: [registry],
    collect() {
      this.set(sources.stats().leases);
    },
  });
  new Gauge({
    name: "bindwatch_polls_waiting_for_budget",
    help: "Polls of this instance waiting for a call permit: demand past UPSTREAM_QPS (each waits its turn).",
    registers: [registry],
    collect() {
      this.set(sources.stats().waitingForBudget);
    },
  });
  new Gauge({
    name: "bindwatch_watchers",
    help: "Watchers (streams and held long-polls) attached on this instance.",
    registers: [registry],
    collect() {
      this.set(sources.stats().watchers);
    },
  });
  const events = new Counter({
    name: "bindwatch_events_sent_total",
    help: "SSE state events written to streams.",
    registers: [registry],
  });
  const finished = new Counter({
    name: "bindwatch_binds_finished_total",
    help: "Bind attempts that reached a final status, as seen by the instance that finished them.",
    labelNames: ["status"] as const,
    registers: [registry],
  });

  const redisRequests = new Counter({
    name: "bindwatch_redis_requests_total",
    help: "Requests this instance sent to Redis (a script or a pipeline being one), by operation.",
    labelNames: ["operation"] as const,
    registers: [registry],
  });
  const redis = {
    onRequest(operation: string) {
      redisRequests.inc({ operation });
    },
  };

  const deliveries = new Counter({
    name: "bindwatch_webhook_deliveries_total",
    help: "Webhook attempts this instance made, by outcome (delivered, gone, failed, gave_up).",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const attemptLatency = new Histogram({
    name: "bindwatch_webhook_attempt_duration_seconds",
    help: "Webhook attempt latency, from request to answer (or timeout).",
    labelNames: ["outcome"] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  let trackedWebhooks: (() => Promise<number>) | null = null;
  new Gauge({
    name: "bindwatch_webhook_pending",
    help: "Binds whose webhooks are not done, deployment-wide: not final yet, or final with deliveries left.",
    registers: [registry],
    async collect() {
      if (trackedWebhooks) this.set(await trackedWebhooks().catch(() => Number.NaN));
    },
  });

  const service: ServiceObserver = {
    onAttempt(outcome, durationMs) {
      deliveries.inc({ outcome });
      attemptLatency.observe({ outcome }, durationMs / 1000);
    },
    onCall(outcome, durationMs) {
      calls.inc({ outcome });
      latency.observe({ outcome }, durationMs / 1000);
    },
    onFinished(status) {
      finished.inc({ status });
    },
  };
  const http: HttpObserver = {
    onEventSent() {
      events.inc();
    },
  };
  return {
    registry,
    service,
    http,
    redis,
    /** The pending gauge reads the deployment's list of binds whose webhooks are not done. */
    watchWebhooks(count: () => Promise<number>) {
      trackedWebhooks = count;
    },
  };
}
