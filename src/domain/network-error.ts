/**
 * A failed fetch as a log line or error message may show it: "fetch failed (ECONNREFUSED)".
 * undici hides the useful part in `cause`.
 */
export function describeNetworkError(error: unknown): string {
  if (!(error instanceof Error)) return "network error";
  const cause: unknown = error.cause;
  const code = typeof cause === "object" && cause !== null && "code" in cause ? cause.code : undefined;
  return typeof code === "string" ? `${error.message} (${code})` : error.message || "network error";
}
