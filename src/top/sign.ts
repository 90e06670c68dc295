// node:crypto rather than Web Crypto: Web Crypto has no MD5, and workerd provides
// node:crypto under the nodejs_compat flag, so one implementation serves both.
import { createHash, createHmac } from "node:crypto";

export const SIGN_METHODS = ["md5", "hmac", "hmac-sha256"] as const;
export type SignMethod = (typeof SIGN_METHODS)[number];

export type TopParams = Readonly<Record<string, string | undefined>>;

/**
 * The text TOP signs: every parameter but `sign` with a non-empty value, sorted by
 * key in byte order, concatenated as key1value1key2value2… without encoding.
 */
export function buildSignText(params: TopParams): string {
  const keys = Object.keys(params).filter((k) => k !== "sign" && params[k] !== undefined && params[k] !== "");
  // Byte order of UTF-8 keys equals code point order; TOP keys are ASCII anyway.
  keys.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  let text = "";
  for (const k of keys) text += k + params[k];
  return text;
}

/**
 * Signs TOP parameters as the gateway checks them, in upper-case hex.
 * @example signTopParams({ method: "taobao.item.seller.get", ... }, "helloworld", "md5")
 */
export function signTopParams(params: TopParams, secret: string, method: SignMethod): string {
  const text = buildSignText(params);
  switch (method) {
    case "md5":
      return createHash("md5")
        .update(secret + text + secret, "utf8")
        .digest("hex")
        .toUpperCase();
    case "hmac":
      return createHmac("md5", Buffer.from(secret, "utf8")).update(text, "utf8").digest("hex").toUpperCase();
    case "hmac-sha256":
      return createHmac("sha256", Buffer.from(secret, "utf8")).update(text, "utf8").digest("hex").toUpperCase();
  }
}

export function isSignMethod(value: string): value is SignMethod {
  return (SIGN_METHODS as readonly string[]).includes(value);
}
