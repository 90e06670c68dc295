/*
 * The simulator as a TOP sandbox (SPEC §6): the same simulated gateway that answers
 * bindwatch's own client also answers any other TOP client at `POST /sim/router/rest` on
 * the server's own port, signed with these credentials. Scripts set through /sim apply to
 * both, since there is one simulator.
 */

/** Where the sandbox gateway answers, on the server's own origin. */
export const SANDBOX_GATEWAY_PATH = "/sim/router/rest";

export interface SandboxCredentials {
  readonly appKey: string;
  readonly appSecret: string;
}

/**
 * Fills in what the configuration left unset, at random, in the shape of TOP's own
 * credentials: an 8-digit app key and a 32-hex-digit secret.
 * @example createSandboxCredentials({ appKey: undefined, appSecret: undefined }) // { appKey: "40517723", appSecret: "9f1c…" }
 */
export function createSandboxCredentials(given: {
  readonly appKey: string | undefined;
  readonly appSecret: string | undefined;
}): SandboxCredentials {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const digits = crypto.getRandomValues(new Uint32Array(1))[0]! % 90_000_000;
  return {
    appKey: given.appKey ?? String(10_000_000 + digits),
    appSecret: given.appSecret ?? Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""),
  };
}
