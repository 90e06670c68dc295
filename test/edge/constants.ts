/** Credentials the gateway double accepts and the Worker under test is configured with. */
export const GATEWAY_APP_KEY = "edge-test-app-key";
export const GATEWAY_APP_SECRET = "edge-test-app-secret";

/** The secret the Worker signs webhooks with, and the receiver double verifies them with. */
export const WEBHOOK_TEST_SECRET = "whsec_ZWRnZS13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5";

/** The Worker's variables in the `workers` test project: short timings, TOP credentials, md5 signing. */
export const EDGE_TEST_VARS = {
  TOP_APP_KEY: GATEWAY_APP_KEY,
  TOP_APP_SECRET: GATEWAY_APP_SECRET,
  // md5 in the full flow; the signing test covers hmac and hmac-sha256 too.
  TOP_SIGN_METHOD: "md5",
  POLL_INTERVAL_MS: "100",
  POLL_LINGER_MS: "3000",
  BIND_TIMEOUT_MS: "4000",
  RESULT_TTL_MS: "1500",
  HEARTBEAT_MS: "1000",
  TERMINAL_RET_CODES: "1001",
  LOG_LEVEL: "warn",
  // Every Worker is held to the production rules: open access only on purpose.
  ALLOW_OPEN_ACCESS: "true",
  // WEBHOOK_URL is the receiver double's (vitest.config.ts): every final is POSTed there.
  WEBHOOK_SECRET: WEBHOOK_TEST_SECRET,
  WEBHOOK_RETRY_MS: "300",
  WEBHOOK_TIMEOUT_MS: "1000",
} as const;
