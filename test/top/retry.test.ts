import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CheckbindOutcome } from "../../src/domain/outcome.js";
import type { RetryableOutcome } from "../../src/top/retry.js";
import { RetryableOutcomeError, retryCheckbind } from "../../src/top/retry.js";
import { WAITING } from "../support/outcomes.js";

const TRANSIENT: CheckbindOutcome = { kind: "transient", message: "HTTP 502", requestId: "" };
const LIMITED: CheckbindOutcome = { kind: "rate_limited", banMs: 3000, message: "TOP error 7", requestId: "r" };
const REJECTED: CheckbindOutcome = { kind: "rejected", message: "TOP error 41", requestId: "r" };

/** An attempt that answers from a script (the last entry repeats) and records when it was called. */
function scripted(outcomes: readonly CheckbindOutcome[]) {
  const calledAt: number[] = [];
  const attempt = vi.fn(async (_attemptNumber: number) => {
    calledAt.push(Date.now());
    const outcome = outcomes[Math.min(calledAt.length, outcomes.length) - 1];
    if (!outcome) throw new Error("empty script");
    return outcome;
  });
  const gaps = () => calledAt.slice(1).map((t, i) => t - (calledAt[i] ?? 0));
  return { attempt, calledAt, gaps };
}

beforeEach(() => {
  vi.useFakeTimers({ now: new Date("2026-11-29T10:00:00.000Z") });
});

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("retryCheckbind", () => {
  it("returns a non-retryable outcome at once", async () => {
    const { attempt } = scripted([REJECTED]);
    await expect(retryCheckbind(attempt, { intervalMs: 1000 })).resolves.toBe(REJECTED);
    expect(attempt).toHaveBeenCalledTimes(1);
    expect(attempt).toHaveBeenCalledWith(1);
  });

  it("retries a transient outcome once after at least intervalMs", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const { attempt } = scripted([TRANSIENT, WAITING]);
    const onRetry = vi.fn();
    const result = retryCheckbind(attempt, { intervalMs: 1000, onRetry });

    await vi.advanceTimersByTimeAsync(999);
    expect(attempt).toHaveBeenCalledTimes(1);
    expect(onRetry).toHaveBeenCalledExactlyOnceWith(TRANSIENT, 1);
    await vi.advanceTimersByTimeAsync(1);
    expect(attempt).toHaveBeenCalledTimes(2);
    expect(attempt).toHaveBeenLastCalledWith(2);
    await expect(result).resolves.toBe(WAITING);
  });

  it("jitters the first delay within [intervalMs, 2 × intervalMs]", async () => {
    const { attempt, gaps } = scripted([TRANSIENT, WAITING]);
    const result = retryCheckbind(attempt, { intervalMs: 1000 });
    await vi.advanceTimersByTimeAsync(999);
    expect(attempt).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1001);
    await expect(result).resolves.toBe(WAITING);
    expect(gaps()[0]).toBeGreaterThanOrEqual(1000);
    expect(gaps()[0]).toBeLessThanOrEqual(2000);
  });

  it("doubles the delay and caps it at maxDelayMs", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const { attempt, gaps } = scripted([TRANSIENT, TRANSIENT, TRANSIENT, TRANSIENT, TRANSIENT, TRANSIENT, WAITING]);
    const result = retryCheckbind(attempt, { intervalMs: 1000, maxDelayMs: 5000 });
    await vi.advanceTimersByTimeAsync(60_000);
    await expect(result).resolves.toBe(WAITING);
    expect(gaps()).toEqual([1000, 2000, 4000, 5000, 5000, 5000]);
  });

  it("caps jittered delays too", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999);
    const { attempt, gaps } = scripted([TRANSIENT, TRANSIENT, TRANSIENT, WAITING]);
    const result = retryCheckbind(attempt, { intervalMs: 1000, maxDelayMs: 3000 });
    await vi.advanceTimersByTimeAsync(60_000);
    await expect(result).resolves.toBe(WAITING);
    expect(gaps()).toEqual([1999, 3000, 3000]);
  });

  it("caps at 30 s by default", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const { attempt, gaps } = scripted([TRANSIENT, TRANSIENT, TRANSIENT, WAITING]);
    const result = retryCheckbind(attempt, { intervalMs: 20_000 });
    await vi.advanceTimersByTimeAsync(200_000);
    await expect(result).resolves.toBe(WAITING);
    expect(gaps()).toEqual([20_000, 30_000, 30_000]);
  });

  it("retries rate_limited outcomes without a backoff delay or a consumed retry", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const { attempt, gaps } = scripted([LIMITED, LIMITED, TRANSIENT, LIMITED, TRANSIENT, WAITING]);
    const onRetry = vi.fn();
    const result = retryCheckbind(attempt, { intervalMs: 1000, onRetry });
    await vi.advanceTimersByTimeAsync(0);
    expect(attempt).toHaveBeenCalledTimes(3);
    await vi.advanceTimersByTimeAsync(10_000);
    await expect(result).resolves.toBe(WAITING);
    // The bans cost no delay and do not grow the backoff: 1000 after the first transient, 2000 after the second.
    expect(gaps()).toEqual([0, 0, 1000, 0, 2000]);
    expect(onRetry.mock.calls).toEqual([
      [LIMITED, 1],
      [LIMITED, 2],
      [TRANSIENT, 3],
      [LIMITED, 4],
      [TRANSIENT, 5],
    ]);
  });

  it("awaits an async onRetry before the next attempt", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const { attempt } = scripted([LIMITED, WAITING]);
    const published: RetryableOutcome[] = [];
    const onRetry = async (outcome: RetryableOutcome) => {
      await new Promise((resolve) => setTimeout(resolve, 500));
      published.push(outcome);
    };
    const result = retryCheckbind(attempt, { intervalMs: 1000, onRetry });
    await vi.advanceTimersByTimeAsync(499);
    expect(attempt).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(result).resolves.toBe(WAITING);
    expect(published).toEqual([LIMITED]);
  });

  it("rejects with the abort reason when aborted during a backoff", async () => {
    const { attempt } = scripted([TRANSIENT]);
    const controller = new AbortController();
    const result = retryCheckbind(attempt, { intervalMs: 1000, signal: controller.signal });
    const settled = expect(result).rejects.toBe("stopped");
    await vi.advanceTimersByTimeAsync(500);
    controller.abort("stopped");
    await settled;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(attempt).toHaveBeenCalledTimes(1);
  });

  it("rejects with the abort reason when the attempt rejects with it", async () => {
    const controller = new AbortController();
    const reason = new Error("shutdown");
    const attempt = vi.fn(async () => {
      controller.abort(reason);
      throw reason;
    });
    await expect(retryCheckbind(attempt, { intervalMs: 1000, signal: controller.signal })).rejects.toBe(reason);
    expect(attempt).toHaveBeenCalledTimes(1);
  });

  it("rejects at once when the signal is already aborted", async () => {
    const { attempt } = scripted([WAITING]);
    const reason = new Error("early");
    await expect(retryCheckbind(attempt, { intervalMs: 1000, signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(attempt).not.toHaveBeenCalled();
  });

  it("does not retry an attempt that throws (a bug, not an outcome)", async () => {
    const bug = new Error("boom");
    const attempt = vi.fn(async () => {
      throw bug;
    });
    await expect(retryCheckbind(attempt, { intervalMs: 1000 })).rejects.toBe(bug);
    expect(attempt).toHaveBeenCalledTimes(1);
  });
});

describe("RetryableOutcomeError", () => {
  it("is a named Error, not a TypeError, carrying its outcome", () => {
    const error = new RetryableOutcomeError({ kind: "transient", message: "HTTP 502", requestId: "" });
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(TypeError);
    expect(error.name).toBe("RetryableOutcomeError");
    expect(error.message).toBe("transient: HTTP 502");
    expect(error.outcome.kind).toBe("transient");
  });
});
