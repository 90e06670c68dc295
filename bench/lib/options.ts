import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

/*
 * The bench's command line, parsed once at the entry into a frozen object. Every size
 * has a default and a smaller `--quick` one; an option that is wrong names itself.
 */

/** Scenarios `--only` can pick; `curves` runs only when asked for (it takes minutes and writes docs/charts). */
export const SCENARIOS = ["capacity", "singleflight", "rediscost", "fanout", "register", "curves"] as const;
export type ScenarioName = (typeof SCENARIOS)[number];
const DEFAULT_SCENARIOS: readonly ScenarioName[] = ["capacity", "singleflight", "rediscost", "fanout", "register"];

export interface BenchSizes {
  readonly streams: number;
  readonly capacityTraces: number;
  readonly fanout: number;
  readonly watchers: number;
  readonly traces: number;
  readonly clients: number;
  readonly idleMs: number;
  readonly sfIntervals: number;
  readonly naiveIntervals: number;
  readonly postSeconds: number;
  readonly postConcurrency: number;
  /** Traces of the Redis cost scenario, each watched on every instance. */
  readonly costTraces: number;
  /** Poll intervals the Redis cost is measured over. */
  readonly costIntervals: number;
  /** Fan-out sizes of the growth curves, ascending. */
  readonly curveStreams: readonly number[];
  /** Registration requests in flight of the growth curves, ascending. */
  readonly curveConcurrency: readonly number[];
}

export interface BenchOptions {
  readonly sizes: BenchSizes;
  /** How many times the scenarios run; the summary gives each figure's median run. */
  readonly runs: number;
  readonly scenarios: ReadonlySet<ScenarioName>;
  readonly quick: boolean;
  readonly nchan: boolean;
  readonly rawFanout: boolean;
  readonly install: boolean;
  readonly profile: boolean;
  /** Where the Markdown report goes; undefined: a file in the temp dir. */
  readonly out: string | undefined;
  /** Where the growth curves' charts and data go; undefined: docs/charts of the checkout. */
  readonly chartsDir: string | undefined;
  readonly help: boolean;
}

export class BenchOptionError extends Error {
  override readonly name = "BenchOptionError";
}

export const HELP = `npm run bench -- [options]
  --streams N           streams held by one instance (capacity)     default 15000 (quick 3000)
  --capacity-traces N   traces those streams watch                   default 100   (quick 20)
  --fanout N            watchers of one trace for fan-out latency    default 10000 (quick 2000)
  --watchers W          watchers for single flight (3 instances)     default 3000  (quick 600)
  --traces T            traces for single flight                     default 100   (quick 20)
  --clients P           client processes (≤ 20,000 sockets each)     default 4
  --idle-ms MS          idle window for CPU and pings                default 15000 = HEARTBEAT_MS (quick 6000)
  --sf-intervals K      poll intervals measured for single flight    default 10    (quick 4)
  --naive-intervals K   poll intervals measured for the naive design default 3     (quick 2)
  --post-seconds S      registration load per variant (and curve point) default 5  (quick 2)
  --post-concurrency C  registration requests in flight              default 32
  --cost-traces T       traces of the Redis cost scenario            default 50    (quick 10)
  --cost-intervals K    poll intervals the Redis cost is measured    default 10    (quick 4)
  --curve-streams LIST  fan-out sizes of the curves    default 1000,2500,5000,10000,15000 (quick 500,1000,2000,3000)
  --curve-concurrency LIST  registrations in flight of the curves    default 1,2,4,8,16,32,64
  --runs N              runs of the scenarios; the summary row of each figure is its median run  default 3 (quick 1)
  --only LIST           capacity,singleflight,rediscost,fanout,register,curves  default all but curves
  --quick               small sizes, short windows (a smoke run)
  --no-nchan            skip the Nchan baseline      --no-install  never apt-get install nginx/Nchan
  --no-raw-fanout       skip the raw node:http fan-out column (and its curve)
  --profile             bindwatch runs with --cpu-prof and --heapsnapshot-signal=SIGUSR2 (capacity snapshot)
  --out FILE            also write the Markdown report here (default: a file in the temp dir)
  --charts DIR          where curves writes its SVG charts and curves.json (default: docs/charts)`;

/** Parses the bench's arguments; throws a BenchOptionError naming the option at fault. */
export function parseBenchOptions(argv: readonly string[]): BenchOptions {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (err) {
    throw new BenchOptionError(err instanceof Error ? err.message : String(err));
  }
  const quick = values.quick === true;
  const int = (name: keyof typeof values, normal: number, small: number): number => {
    const raw = values[name];
    if (typeof raw !== "string") return quick ? small : normal;
    return positiveInteger(name, raw);
  };
  const list = (name: keyof typeof values, normal: readonly number[], small: readonly number[]): number[] => {
    const raw = values[name];
    if (typeof raw !== "string") return [...(quick ? small : normal)];
    const parsed = raw.split(",").map((part) => positiveInteger(name, part.trim()));
    return [...new Set(parsed)].sort((a, b) => a - b);
  };
  const sizes: BenchSizes = Object.freeze({
    streams: int("streams", 15_000, 3_000),
    capacityTraces: int("capacity-traces", 100, 20),
    fanout: int("fanout", 10_000, 2_000),
    watchers: int("watchers", 3_000, 600),
    traces: int("traces", 100, 20),
    clients: int("clients", 4, 4),
    idleMs: int("idle-ms", 15_000, 6_000),
    sfIntervals: int("sf-intervals", 10, 4),
    naiveIntervals: int("naive-intervals", 3, 2),
    postSeconds: int("post-seconds", 5, 2),
    postConcurrency: int("post-concurrency", 32, 32),
    costTraces: int("cost-traces", 50, 10),
    costIntervals: int("cost-intervals", 10, 4),
    curveStreams: Object.freeze(
      list("curve-streams", [1_000, 2_500, 5_000, 10_000, 15_000], [500, 1_000, 2_000, 3_000]),
    ),
    curveConcurrency: Object.freeze(list("curve-concurrency", [1, 2, 4, 8, 16, 32, 64], [1, 2, 4, 8, 16, 32, 64])),
  });
  let scenarios: readonly ScenarioName[] = DEFAULT_SCENARIOS;
  if (values.only !== undefined) {
    const names = values.only.split(",").map((s) => s.trim());
    const unknown = names.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
    if (unknown.length > 0)
      throw new BenchOptionError(`--only: unknown scenario "${unknown.join(",")}" (known: ${SCENARIOS.join(",")})`);
    scenarios = names as ScenarioName[];
  }
  return Object.freeze({
    sizes,
    runs: int("runs", 3, 1),
    scenarios: new Set(SCENARIOS.filter((s) => scenarios.includes(s))),
    quick,
    nchan: values["no-nchan"] !== true,
    rawFanout: values["no-raw-fanout"] !== true,
    install: values["no-install"] !== true,
    profile: values.profile === true,
    out: values.out,
    chartsDir: values.charts,
    help: values.help === true,
  });
}

/** A process may hold at most 20,000 descriptors here: the client processes and the server must fit under it. */
export const FD_LIMIT = 20_000;

/** Throws a BenchOptionError when the sizes cannot fit the machine's descriptor limits. */
export function checkDescriptorLimits(sizes: BenchSizes): void {
  const largestServer = Math.max(sizes.streams, sizes.fanout, ...sizes.curveStreams);
  const perClient = Math.ceil(Math.max(largestServer, sizes.watchers) / sizes.clients);
  if (perClient > FD_LIMIT - 500)
    throw new BenchOptionError(`${perClient} sockets per client process is too many; raise --clients`);
  if (largestServer > FD_LIMIT - 1_000)
    throw new BenchOptionError(`one server process cannot hold more than ~${FD_LIMIT - 1_000} streams here`);
  // Children inherit this process's limit: the server must hold every stream plus a few descriptors.
  const limit = openFileLimit();
  if (limit < largestServer + 500)
    throw new BenchOptionError(
      `the descriptor limit (ulimit -n) is ${limit}; ${largestServer} streams need about ${largestServer + 500}`,
    );
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    options: {
      streams: { type: "string" },
      "capacity-traces": { type: "string" },
      fanout: { type: "string" },
      watchers: { type: "string" },
      traces: { type: "string" },
      clients: { type: "string" },
      "idle-ms": { type: "string" },
      "sf-intervals": { type: "string" },
      "naive-intervals": { type: "string" },
      "post-seconds": { type: "string" },
      "post-concurrency": { type: "string" },
      "cost-traces": { type: "string" },
      "cost-intervals": { type: "string" },
      "curve-streams": { type: "string" },
      "curve-concurrency": { type: "string" },
      only: { type: "string" },
      runs: { type: "string" },
      quick: { type: "boolean", default: false },
      "no-nchan": { type: "boolean", default: false },
      "no-raw-fanout": { type: "boolean", default: false },
      "no-install": { type: "boolean", default: false },
      profile: { type: "boolean", default: false },
      out: { type: "string" },
      charts: { type: "string" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
}

function positiveInteger(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1)
    throw new BenchOptionError(`--${name} must be a positive integer, got "${raw}"`);
  return value;
}

function openFileLimit(): number {
  try {
    return Number(/^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? Number.NaN);
  } catch {
    return Number.NaN;
  }
}
