import { describe, expect, it } from "vitest";
import type { BindRegistration } from "../../src/domain/bind.js";
import { buildCheckbindParams } from "../../src/top/request.js";
import { buildSignText, signTopParams } from "../../src/top/sign.js";

// The public TOP test vector (SPEC §2); the hmac and hmac-sha256 signatures below were
// computed independently with python3 hmac/hashlib and `openssl dgst -md5 -hmac`.
const PUBLIC_VECTOR = {
  method: "taobao.item.seller.get",
  app_key: "12345678",
  session: "test",
  timestamp: "2016-01-01 12:00:00",
  format: "json",
  v: "2.0",
  sign_method: "md5",
  fields: "num_iid,title,nick,price,num",
  num_iid: "11223344",
} as const;

describe("signTopParams", () => {
  it("matches the public md5 vector", () => {
    expect(signTopParams(PUBLIC_VECTOR, "helloworld", "md5")).toBe("66987CB115214E59E6EC978214934FB8");
  });

  it("signs with hmac (HMAC-MD5)", () => {
    const params = { ...PUBLIC_VECTOR, sign_method: "hmac" };
    expect(buildSignText(params)).toBe(
      "app_key12345678fieldsnum_iid,title,nick,price,numformatjsonmethodtaobao.item.seller.get" +
        "num_iid11223344sessiontestsign_methodhmactimestamp2016-01-01 12:00:00v2.0",
    );
    expect(signTopParams(params, "helloworld", "hmac")).toBe("D56D7858309C31B6251083A874D48273");
  });

  it("signs with hmac-sha256", () => {
    const params = { ...PUBLIC_VECTOR, sign_method: "hmac-sha256" };
    expect(signTopParams(params, "helloworld", "hmac-sha256")).toBe(
      "04DB15AD0774D5CFCE2C837DE43E3FCEA9011ED74F3038FB6AB5F3C4CEA119E8",
    );
  });

  it("drops empty values and `sign` from the sign text", () => {
    const withNoise = { ...PUBLIC_VECTOR, partner_id: "", extra: undefined, sign: "WHATEVER" };
    expect(buildSignText(withNoise)).toBe(buildSignText(PUBLIC_VECTOR));
    expect(buildSignText(withNoise)).not.toContain("WHATEVER");
    expect(buildSignText(withNoise)).not.toContain("partner_id");
    expect(signTopParams(withNoise, "helloworld", "md5")).toBe("66987CB115214E59E6EC978214934FB8");
  });

  it("sorts keys in byte order, not locale order", () => {
    expect(buildSignText({ b: "2", B: "1", a_b: "4", ab: "3" })).toBe("B1a_b4ab3b2");
  });
});

describe("buildCheckbindParams with non-ASCII and reserved characters", () => {
  const reg: BindRegistration = {
    trace_id: "213d614316665898871384404d071e",
    open_id: "open id+/=",
    product_key: "a1B2c3D4e5",
    user_type: "ilop",
    device_name: "灯 1 & 2",
    params: { ssProductKey: "a1XyZ", authCode: "授权 码=1&x=%20 😀", note: "100% 好 & more" },
  };
  const secret = "s3cr3t 密钥";
  // Computed with python3: json.dumps(ensure_ascii=False, separators=(",", ":")),
  // the sign text below, and hmac.new(secret, text, sha256) / md5(secret + text + secret).
  const paramsJson = '{"ssProductKey":"a1XyZ","authCode":"授权 码=1&x=%20 😀","note":"100% 好 & more"}';
  const signText =
    "app_key12345678device_name灯 1 & 2formatjsonmethodalibaba.ailabs.iot.device.inside.checkbind.invoke" +
    `open_idopen id+/=params${paramsJson}product_keya1B2c3D4e5sign_methodhmac-sha256` +
    "timestamp2026-11-29 18:00:00trace_id213d614316665898871384404d071euser_typeilopv2.0";
  const now = () => new Date("2026-11-29T10:00:00.000Z");

  it("signs the exact text TOP expects (hmac-sha256)", () => {
    const { params } = buildCheckbindParams(reg, {
      appKey: "12345678",
      appSecret: secret,
      signMethod: "hmac-sha256",
      now,
    });
    expect(params.params).toBe(paramsJson);
    expect(params.timestamp).toBe("2026-11-29 18:00:00");
    expect(buildSignText(params)).toBe(signText);
    expect(params.sign).toBe("CC56CED7AF6544C75F57B7EC52DF504B9C2364A73389EC00FCFE4A61044B4B5D");
  });

  it("signs the exact text TOP expects (md5)", () => {
    const { params } = buildCheckbindParams(reg, { appKey: "12345678", appSecret: secret, signMethod: "md5", now });
    expect(params.sign).toBe("D3BA6117C8B308D858BD36FA1F7C8C48");
  });

  it("form-encodes so that parsing gives back the exact signed text", () => {
    const { params, form } = buildCheckbindParams(reg, {
      appKey: "12345678",
      appSecret: secret,
      signMethod: "hmac-sha256",
      now,
    });
    const body = form.toString();
    // x-www-form-urlencoded: space is "+", and the reserved characters are escaped.
    expect(body).toContain("device_name=%E7%81%AF+1+%26+2");
    expect(body).not.toMatch(/[ 好😀]/u);
    const parsed = new URLSearchParams(body);
    expect(parsed.get("params")).toBe(paramsJson);
    expect(parsed.get("open_id")).toBe("open id+/=");
    expect(Object.fromEntries(parsed)).toEqual(params);
    expect(signTopParams(Object.fromEntries(parsed), secret, "hmac-sha256")).toBe(parsed.get("sign"));
  });
});
