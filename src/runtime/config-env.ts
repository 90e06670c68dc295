/*
 * Reading one variable of the environment (SPEC §5): trimmed, an empty value as unset,
 * a bad value as a ConfigError that names the variable. config.ts and redis-config.ts
 * build the configuration with these.
 */

/** A variable with a bad value, or a combination bindwatch refuses to run with; names the variables at fault. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** Every variable at fault, the first one in `variable`. */
  readonly variables: readonly string[];
  constructor(
    readonly variable: string,
    message: string,
    others: readonly string[] = [],
  ) {
    super(`${variable}: ${message}`);
    this.variables = [variable, ...others];
  }
}

export type Env = Readonly<Record<string, string | undefined>>;

/** The variable's value, trimmed; unset or empty is undefined. */
export function read(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

/** A whole number within [min, max], or `fallback` when unset. */
export function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** true for `on`, false for `off` (the two words given), undefined when unset. */
export function flag(env: Env, name: string, values: readonly [on: string, off: string]): boolean | undefined {
  const raw = read(env, name)?.toLowerCase();
  if (raw === undefined) return undefined;
  if (raw === values[0]) return true;
  if (raw === values[1]) return false;
  throw new ConfigError(name, `must be ${values[0]} or ${values[1]}, got "${raw}"`);
}

/** A comma-separated list, items trimmed, empty items dropped. */
export function list(env: Env, name: string): string[] {
  return (read(env, name) ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** A URL with one of `protocols` (like `https:`), or `fallback` when unset. */
export function url(
  env: Env,
  name: string,
  fallback: string | undefined,
  protocols: readonly string[],
): string | undefined {
  const raw = read(env, name) ?? fallback;
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, "is not a valid URL");
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(" or ")}, got ${parsed.protocol}`);
  }
  return raw;
}

/** An exact origin (`https://app.example.com`), or a ConfigError naming `name`. */
export function exactOrigin(origin: string, name: string): string {
  let parsed: URL;
  try {
    parsed = new URL(origin);
  } catch {
    throw new ConfigError(name, `"${origin}" is not an origin`);
  }
  if (parsed.origin !== origin || !["http:", "https:"].includes(parsed.protocol)) {
    throw new ConfigError(name, `"${origin}" is not an exact origin (like https://app.example.com)`);
  }
  return origin;
}
