import pRetry from "p-retry";
import type { CheckbindOutcome } from "../domain/outcome.js";
import { isRetryableOutcome } from "../domain/outcome.js";

export type RetryableOutcome = Extract<CheckbindOutcome, { kind: "transient" | "rate_limited" }>;
export type SettledOutcome = Exclude<CheckbindOutcome, RetryableOutcome>;

/** SPEC §2: backoff is capped at 30 s. */
export const DEFAULT_MAX_RETRY_DELAY_MS = 30_000;

/**
 * Carries a retryable outcome through p-retry. Deliberately not a TypeError:
 * p-retry 7 gives up at once on TypeErrors that are not network errors.
 */
export class RetryableOutcomeError extends Error {
  override readonly name = "RetryableOutcomeError";
  readonly outcome: RetryableOutcome;

  constructor(outcome: RetryableOutcome) {
    super(`${outcome.kind}: ${outcome.message}`);
    this.outcome = outcome;
  }
}

export interface RetryCheckbindOptions {
  /** First backoff delay: the poll interval. */
  readonly intervalMs: number;
  /** Backoff cap; defaults to {@link DEFAULT_MAX_RETRY_DELAY_MS}. */
  readonly maxDelayMs?: number;
  readonly signal?: AbortSignal;
  /** Awaited with each retryable outcome before the next attempt (e.g. to publish the error); a throw ends the retries with it. */
  readonly onRetry?: (outcome: RetryableOutcome, attemptNumber: number) => void | Promise<void>;
}

/**
 * Calls `attempt` until it gives an outcome that is not retryable (SPEC §2).
 * Transient outcomes back off exponentially from `intervalMs` with jitter, capped at
 * `maxDelayMs`; rate-limited ones are retried at once without consuming a retry,
 * because `attempt` itself waits out the ban before it calls TOP again.
 * Aborting `signal` rejects with its reason.
 * @example const outcome = await retryCheckbind(() => client.checkbind(reg, signal), { intervalMs: 2000, signal });
 */
export async function retryCheckbind(
  attempt: (attemptNumber: number) => Promise<CheckbindOutcome>,
  opts: RetryCheckbindOptions,
): Promise<SettledOutcome> {
  const { signal, onRetry } = opts;
  try {
    return await pRetry(
      async (attemptNumber) => {
        const outcome = await attempt(attemptNumber);
        if (isRetryableOutcome(outcome)) throw new RetryableOutcomeError(outcome);
        return outcome;
      },
      {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: opts.intervalMs,
        factor: 2,
        maxTimeout: opts.maxDelayMs ?? DEFAULT_MAX_RETRY_DELAY_MS,
        randomize: true,
        signal,
        onFailedAttempt: async ({ error, attemptNumber }) => {
          if (error instanceof RetryableOutcomeError) await onRetry?.(error.outcome, attemptNumber);
        },
        shouldConsumeRetry: ({ error }) =>
          !(error instanceof RetryableOutcomeError && error.outcome.kind === "rate_limited"),
        // Anything but a retryable outcome is a bug or an abort, never worth another call.
        shouldRetry: ({ error }) => error instanceof RetryableOutcomeError,
      },
    );
  } catch (error) {
    // p-retry wraps a non-Error abort reason in a TypeError; hand back the reason itself.
    if (signal?.aborted) throw signal.reason;
    throw error;
  }
}
