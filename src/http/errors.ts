import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** Every `error.code` the API answers with (SPEC §3); the API description lists them too. */
export const ERROR_CODES = [
  "invalid_request",
  "unauthorized",
  "forbidden",
  "not_found",
  "method_not_allowed",
  "conflict",
  "payload_too_large",
  "unsupported_media_type",
  "too_many_streams",
  "rate_limited",
  "misconfigured",
  "unavailable",
  "internal",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The one error shape of the API: `{"error": {"code", "message", "field"?}}` (SPEC §3). */
export function errorBody(code: ErrorCode, message: string, field?: string) {
  return { error: field === undefined ? { code, message } : { code, message, field } };
}

export function jsonError(
  c: Context,
  status: ContentfulStatusCode,
  code: ErrorCode,
  message: string,
  field?: string,
  headers?: Record<string, string>,
): Response {
  return c.json(errorBody(code, message, field), status, headers);
}
