import { afterEach, describe, expect, it } from "vitest";
import { formatTopTimestamp, parseTopTimestamp } from "../../src/top/timestamp.js";

describe("formatTopTimestamp", () => {
  it.each([
    ["2016-01-01T04:00:00.000Z", "2016-01-01 12:00:00"],
    ["2026-11-29T10:00:14.999Z", "2026-11-29 18:00:14"],
    // Crossing midnight, a month end and a year end in GMT+8.
    ["2025-12-31T16:00:00.000Z", "2026-01-01 00:00:00"],
    ["2024-02-28T17:30:05.000Z", "2024-02-29 01:30:05"],
    ["1999-12-31T15:59:59.000Z", "1999-12-31 23:59:59"],
  ])("%s → %s", (iso, expected) => {
    expect(formatTopTimestamp(new Date(iso))).toBe(expected);
  });

  describe("whatever the host's zone", () => {
    const savedTz = process.env.TZ;
    afterEach(() => {
      if (savedTz === undefined) delete process.env.TZ;
      else process.env.TZ = savedTz;
    });

    it.each(["America/New_York", "Asia/Shanghai", "UTC", "Pacific/Kiritimati"])("under TZ=%s", (tz) => {
      const at = new Date("2026-07-04T23:30:00.000Z");
      process.env.TZ = tz;
      // Node re-reads TZ when it is assigned; prove the zone took effect.
      const expectedOffset = { "America/New_York": 240, "Asia/Shanghai": -480, UTC: 0, "Pacific/Kiritimati": -840 }[tz];
      expect(at.getTimezoneOffset()).toBe(expectedOffset);
      expect(formatTopTimestamp(at)).toBe("2026-07-05 07:30:00");
      expect(parseTopTimestamp("2026-07-05 07:30:00")?.toISOString()).toBe("2026-07-04T23:30:00.000Z");
    });
  });
});

describe("parseTopTimestamp", () => {
  it("round-trips with formatTopTimestamp (to the second)", () => {
    for (const iso of ["2016-01-01T04:00:00.000Z", "2025-12-31T16:00:00.000Z", "2024-02-28T17:30:05.000Z"]) {
      const at = new Date(iso);
      expect(parseTopTimestamp(formatTopTimestamp(at))?.getTime()).toBe(at.getTime());
    }
  });

  it("reads the text as GMT+8", () => {
    expect(parseTopTimestamp("2016-01-01 12:00:00")?.toISOString()).toBe("2016-01-01T04:00:00.000Z");
  });

  it.each([
    "",
    "2016-01-01",
    "2016-01-01T12:00:00",
    "2016-01-01 12:00:00Z",
    "2016-01-01 12:00",
    " 2016-01-01 12:00:00",
    "2016-1-1 12:00:00",
    "2016-13-01 12:00:00",
    "2016-02-30 12:00:00",
    "2015-02-29 12:00:00",
    "2016-01-01 24:00:00",
    "2016-01-01 12:60:00",
    "2016-01-01 12:00:60",
  ])("rejects %j", (text) => {
    expect(parseTopTimestamp(text)).toBeNull();
  });
});
