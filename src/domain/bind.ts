/** The five states of a bind attempt; every one but `pending` is final. */
export const BIND_STATUSES = ["pending", "bound", "failed", "expired", "cancelled"] as const;
export type BindStatus = (typeof BIND_STATUSES)[number];
export type FinalStatus = Exclude<BindStatus, "pending">;

/** The checkbind business parameters registered for one trace (SPEC §2, §3). */
export interface BindRegistration {
  readonly trace_id: string;
  readonly open_id: string;
  readonly product_key: string;
  readonly user_type: string;
  readonly device_name?: string;
  readonly iot_id?: string;
  readonly server_event_request_id?: string;
  readonly params?: Readonly<Record<string, unknown>>;
  /** Where this bind's final state is also POSTed (a webhook), on an origin of WEBHOOK_ALLOWED_ORIGINS. Not sent to TOP. */
  readonly callback_url?: string;
}

/** What `error.code` of a state may say (SPEC §3). */
export const BIND_ERROR_CODES = ["upstream_unavailable", "rate_limited", "upstream_rejected"] as const;
export type BindErrorCode = (typeof BIND_ERROR_CODES)[number];

export interface BindError {
  readonly code: BindErrorCode;
  readonly message: string;
}

/** What the last checkbind answer said; `null` until the first answer. */
export interface UpstreamInfo {
  readonly ret_code: number | null;
  readonly message: string;
  readonly request_id: string;
  /**
   * The answer's `trace_id`: the gateway's own EagleEye (鹰眼) tracing id, e.g.
   * `213cbe9116665898268912730d06de`, not the bind's trace_id. Alibaba support asks for it.
   */
  readonly eagleeye_id: string;
}

/** The state object of SPEC §3, as stored, published and sent to watchers. */
export interface BindState {
  readonly trace_id: string;
  readonly status: BindStatus;
  readonly final: boolean;
  readonly version: number;
  readonly attempts: number;
  readonly created_at: string;
  readonly updated_at: string;
  readonly expires_at: string;
  readonly upstream: UpstreamInfo | null;
  readonly error: BindError | null;
}

export function isFinalStatus(status: BindStatus): status is FinalStatus {
  return status !== "pending";
}

/** Trace ids are used in URLs and Redis keys, so they are kept to a safe alphabet. */
export const TRACE_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
