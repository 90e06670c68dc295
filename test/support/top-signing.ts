// A TOP client written from the public rules of SPEC §2 alone, with none of bindwatch's own
// TOP code: how the suites call a gateway the way another team's SDK would.
import { createHash, createHmac } from "node:crypto";

export const CHECKBIND_METHOD = "alibaba.ailabs.iot.device.inside.checkbind.invoke";
export const CHECKBIND_SUCCESS_KEY = "alibaba_ailabs_iot_device_inside_checkbind_invoke_response";

export type TopSignMethod = "md5" | "hmac-sha256";

/** TOP's public test vector (SPEC §2): these parameters, md5 with this secret, give this sign. */
export const TOP_MD5_TEST_VECTOR = {
  params: {
    app_key: "12345678",
    fields: "num_iid,title,nick,price,num",
    format: "json",
    method: "taobao.item.seller.get",
    num_iid: "11223344",
    session: "test",
    sign_method: "md5",
    timestamp: "2016-01-01 12:00:00",
    v: "2.0",
  },
  secret: "helloworld",
  sign: "66987CB115214E59E6EC978214934FB8",
} as const;

/** Every parameter but sign with a value, sorted by key, as key1value1…; upper-case hex. */
export function signTop(params: Readonly<Record<string, string>>, secret: string, method: TopSignMethod): string {
  const text = Object.keys(params)
    .filter((key) => key !== "sign" && params[key] !== "")
    .sort()
    .map((key) => `${key}${params[key]}`)
    .join("");
  const digest =
    method === "md5"
      ? createHash("md5").update(`${secret}${text}${secret}`, "utf8")
      : createHmac("sha256", secret).update(text, "utf8");
  return digest.digest("hex").toUpperCase();
}

/** `yyyy-MM-dd HH:mm:ss` in GMT+8, whatever this host's zone (the Swedish locale writes ISO dates). */
export function formatGmt8(at: number): string {
  return new Intl.DateTimeFormat("sv-SE", {
    timeZone: "Asia/Shanghai",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  }).format(at);
}

export interface CheckbindCall {
  readonly appKey: string;
  readonly appSecret: string;
  readonly traceId: string;
  readonly signMethod?: TopSignMethod;
  /** When the call is made, epoch ms (default now). */
  readonly at?: number;
}

/** The signed form of one checkbind call, as an SDK POSTs it. */
export function checkbindForm(call: CheckbindCall): URLSearchParams {
  const signMethod = call.signMethod ?? "hmac-sha256";
  const params: Record<string, string> = {
    method: CHECKBIND_METHOD,
    app_key: call.appKey,
    timestamp: formatGmt8(call.at ?? Date.now()),
    v: "2.0",
    format: "json",
    sign_method: signMethod,
    open_id: "ou_sandbox",
    product_key: "a1SandboxKey",
    trace_id: call.traceId,
    user_type: "ilop",
    params: JSON.stringify({ ssProductKey: "ss", authCode: "a b&c=d" }),
  };
  params.sign = signTop(params, call.appSecret, signMethod);
  return new URLSearchParams(params);
}

/** A POST of that form to `url`, as `fetch` takes it. */
export function checkbindRequest(url: string, call: CheckbindCall): Request {
  return new Request(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded;charset=utf-8" },
    body: checkbindForm(call),
  });
}
