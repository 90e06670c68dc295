const GMT8_OFFSET_MS = 8 * 60 * 60 * 1000;

/**
 * TOP's `timestamp`: `yyyy-MM-dd HH:mm:ss` in GMT+8 whatever the host's zone
 * (the official Node SDK uses local time and is eight hours off on UTC hosts).
 */
export function formatTopTimestamp(at: Date): string {
  const shifted = new Date(at.getTime() + GMT8_OFFSET_MS);
  // toISOString is UTC, so after the shift its fields are GMT+8 wall-clock fields.
  const iso = shifted.toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
}

/** Parses a TOP timestamp back to an instant; `null` when it is not of that form. */
export function parseTopTimestamp(text: string): Date | null {
  const m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/.exec(text);
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  const ms = Date.UTC(y, mo - 1, d, h, mi, s) - GMT8_OFFSET_MS;
  const back = new Date(ms + GMT8_OFFSET_MS);
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) return null;
  return new Date(ms);
}
