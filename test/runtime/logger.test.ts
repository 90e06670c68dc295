import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { bufferedDestination, createLogger } from "../../src/runtime/logger.js";
import { waitUntil } from "../support/server.js";

const FLUSH_MS = 50;
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "bindwatch-log-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A logger over bufferedDestination(fd), a count of its write(2)s; ending it closes the fd. */
function loggerOn(fd: number) {
  const destination = bufferedDestination(fd, FLUSH_MS);
  const writes = { count: 0 };
  destination.on("write", () => {
    writes.count += 1;
  });
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        destination.once("close", () => resolve());
        destination.end();
      }),
  );
  return { logger: createLogger("info", { destination }), writes, destination };
}

const linesOf = (path: string): string[] => readFileSync(path, "utf8").split("\n").filter(Boolean);

describe("the buffered log destination", () => {
  it("writes a line within the flush time, then makes no write while nothing is logged", async () => {
    const path = join(tempDir(), "out.log");
    const { logger, writes } = loggerOn(openSync(path, "w"));
    logger.info({ trace_id: "t-1" }, "one line");
    await waitUntil(() => linesOf(path).length === 1, 5_000, "the line in the file", 5);
    expect(JSON.parse(linesOf(path)[0] ?? "{}")).toMatchObject({ msg: "one line", trace_id: "t-1" });
    // The flush and its one follow-up; then idle. sonic-boom's periodicFlush would write every period.
    await new Promise((resolve) => setTimeout(resolve, 4 * FLUSH_MS));
    const settled = writes.count;
    expect(settled).toBeLessThanOrEqual(2);
    await new Promise((resolve) => setTimeout(resolve, 10 * FLUSH_MS));
    expect(writes.count).toBe(settled);
  });

  it("writes the tail a blocked write leaves buffered, though its flush came while the write was out", async () => {
    // Lines of exactly 1 KiB: the first write takes 4 of them (minLength 4 KiB), the rest
    // are buffered 16 to a 16 KiB chunk. A FIFO whose reader starts 1.5 s late holds 64 KiB:
    // the writes block, and every flush due meanwhile finds one out and does nothing. Three
    // more lines after the full chunks are a 3 KiB tail; when the blocked writes end, only
    // the flush on their drain writes it.
    const dir = tempDir();
    const fifo = join(dir, "pipe");
    const out = join(dir, "out.log");
    execFileSync("mkfifo", [fifo]);
    const reader: ChildProcess = spawn("sh", ["-c", 'exec 3<"$1"; sleep 1.5; exec cat <&3 >"$2"', "sh", fifo, out]);
    cleanups.push(() => {
      reader.kill();
    });
    const { logger, destination } = loggerOn(openSync(fifo, "w"));
    const drainListeners = destination.listenerCount("drain");
    let probe = "";
    const capture = {
      write(line: string) {
        probe = line;
      },
    };
    createLogger("info", { destination: capture }).info({ i: "00000", pad: "" }, "line");
    const pad = "x".repeat(1024 - Buffer.byteLength(probe));
    const log = (i: number) => logger.info({ i: String(i).padStart(5, "0"), pad }, "line");
    const tail = 3;
    const count = 4 + 16 * 10 + tail;
    for (let i = 0; i < count - tail; i += 1) log(i);
    // The flush due 50 ms after these comes while the pipe is full, and so does the one
    // after each tail line: they leave one follow-up on the drain between them, not one each.
    for (let i = count - tail; i < count; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 3 * FLUSH_MS));
      log(i);
    }
    await new Promise((resolve) => setTimeout(resolve, 3 * FLUSH_MS));
    expect(destination.listenerCount("drain") - drainListeners).toBeLessThanOrEqual(1);
    await waitUntil(
      () => {
        try {
          return linesOf(out).length === count;
        } catch {
          return false; // cat has not opened it yet
        }
      },
      10_000,
      "every line through the pipe",
      10,
    );
    expect(linesOf(out).every((line) => Buffer.byteLength(line) + 1 === 1024)).toBe(true);
    expect(linesOf(out).map((line) => Number((JSON.parse(line) as { i: string }).i))).toEqual(
      Array.from({ length: count }, (_, i) => i),
    );
  });

  it("batches a burst into few writes and loses none of it", async () => {
    const path = join(tempDir(), "out.log");
    const { logger, writes } = loggerOn(openSync(path, "w"));
    for (let i = 0; i < 2_000; i += 1) logger.info({ i, pad: "x".repeat(40) }, "burst line");
    await waitUntil(() => linesOf(path).length === 2_000, 10_000, "every line in the file", 10);
    expect(linesOf(path).map((line) => (JSON.parse(line) as { i: number }).i)).toEqual(
      Array.from({ length: 2_000 }, (_, i) => i),
    );
    expect(writes.count).toBeLessThan(200);
  });
});
