import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, inject, it } from "vitest";
import { execute, migrationFiles } from "../../scripts/clickhouse-migrate.mjs";
import { firstPartyCapsuleDirs, packCapsule } from "../../scripts/lib/capsule-bundle.mjs";
import { isAcceptingConnections, liveGroupMembers } from "../../scripts/lib/processes.mjs";
import { type RunningPlatform, startPlatform } from "./global-setup.ts";

const root = path.resolve(import.meta.dirname, "../..");

async function firstPartyCapsules(): Promise<{ name: string; version: string }[]> {
  const dirs = await firstPartyCapsuleDirs(root);
  return Promise.all(dirs.map(async (dir) => packCapsule(dir)));
}

describe("the platform as npm start runs it", () => {
  const baseUrl = inject("baseUrl");

  it("answers /healthz with 200 and ok: true", async () => {
    const response = await fetch(`${baseUrl}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ ok: true });
  });

  it("has published every first-party capsule in capsules/", async () => {
    const capsules = await firstPartyCapsules();
    expect(capsules.map((c) => c.name)).toEqual(
      expect.arrayContaining(["soma/echo", "soma/text-stats", "soma/json-transform"]),
    );
    for (const { name, version } of capsules) {
      const response = await fetch(`${baseUrl}/v1/capsules/${name}`);
      expect(response.status, name).toBe(200);
      const body = (await response.json()) as { capsule: { name: string; latestVersion: string } };
      expect(body.capsule).toMatchObject({ name, latestVersion: version });
    }
  });

  it("runs its own ClickHouse, which answers /ping and has every migration recorded", async () => {
    const clickhouseUrl = inject("clickhouseUrl");
    expect(clickhouseUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const ping = await fetch(`${clickhouseUrl}/ping`);
    expect(await ping.text()).toBe("Ok.\n");
    const recorded = await execute(
      { url: clickhouseUrl },
      "SELECT version FROM schema_migrations ORDER BY version FORMAT TabSeparated",
      "soma",
    );
    const versions = recorded.split("\n").filter(Boolean);
    expect(versions).toEqual(expect.arrayContaining(["0001", "0002"]));
    expect(versions).toEqual((await migrationFiles()).map((m) => m.version));
  });

  it("serves the web app from web/dist at /", async () => {
    const response = await fetch(`${baseUrl}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await response.text()).toContain("SomaAgent Edge");
  });
});

interface CapsuleModule {
  default: { run(input: unknown, ctx?: unknown): Promise<unknown> };
}

/** A first-party capsule's entrypoint, loaded in Node: they use nothing beyond standard JavaScript. */
async function capsule(folder: string): Promise<CapsuleModule["default"]> {
  const module = (await import(
    pathToFileURL(path.join(root, "capsules", folder, "main.js")).href
  )) as CapsuleModule;
  return module.default;
}

describe("first-party capsules", () => {
  it("soma/echo returns its input unchanged", async () => {
    const input = { a: [1, "two", { three: null }] };
    expect(await (await capsule("echo")).run(input)).toEqual(input);
  });

  it("soma/text-stats counts words, lines, sentences and paragraphs", async () => {
    const stats = await (await capsule("text-stats")).run({
      text: "Hello world. Don't stop!\nWell-known hello.\n\nA new paragraph?\n",
      top: 2,
    });
    expect(stats).toEqual({
      characters: 61,
      words: 9,
      lines: 4,
      sentences: 4,
      paragraphs: 2,
      averageWordLength: 5,
      topWords: [
        { word: "hello", count: 2 },
        { word: "a", count: 1 },
      ],
    });
  });

  it("soma/text-stats refuses input without text", async () => {
    await expect((await capsule("text-stats")).run({})).rejects.toThrow("input.text must be a string");
  });

  it("soma/json-transform picks, renames and omits fields of every record", async () => {
    const run = (await capsule("json-transform")).run;
    const output = await run({
      data: [
        { id: 1, user: { email: "a@example.com", name: "A" }, secret: "x" },
        { id: 2, user: { name: "B" } },
      ],
      pick: ["id", "secret"],
      rename: { "user.email": "contact.email" },
      omit: ["secret"],
    });
    expect(output).toEqual({ data: [{ id: 1, contact: { email: "a@example.com" } }, { id: 2 }] });
  });

  it("soma/json-transform refuses paths that reach an object's prototype", async () => {
    const run = (await capsule("json-transform")).run;
    await expect(run({ data: {}, rename: { a: "__proto__.polluted" } })).rejects.toThrow(
      "invalid field path",
    );
  });
});

/** Everything a platform started: the start script's own group and each group it recorded. */
function liveProcesses(platform: RunningPlatform): number[] {
  return [platform.pid, ...platform.groups.map((g) => g.pgid)].flatMap((pgid) => liveGroupMembers(pgid));
}

describe("scripts/start.mjs", () => {
  const scratch: string[] = [];
  const running: RunningPlatform[] = [];

  afterAll(async () => {
    for (const platform of running) await platform.stop();
    for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  });

  it("stops every process it started on SIGTERM, exits 0, and restarts on the same state without republishing", {
    timeout: 600_000,
  }, async () => {
    const stateDir = await mkdtemp(path.join(tmpdir(), "soma-e2e-start-"));
    scratch.push(stateDir);

    const first = await startPlatform({ stateDir });
    running.push(first);
    expect(first.groups.map((g) => g.name)).toEqual(expect.arrayContaining(["wrangler", "clickhouse"]));
    expect(first.output).toContain("[start] published soma/echo@1.0.0 (risk 0, published)");
    expect(first.output.join("\n")).toMatch(
      /\[start\] applied \d+ ClickHouse migration\(s\) to database soma/,
    );
    const clickhousePort = Number(new URL(first.clickhouseUrl).port);

    const second = spawn(process.execPath, [path.join(root, "scripts/start.mjs")], {
      cwd: root,
      env: { ...process.env, SOMA_STATE_DIR: stateDir, PORT: String(first.port) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let secondOutput = "";
    second.stderr.on("data", (chunk: Buffer) => {
      secondOutput += chunk.toString();
    });
    const secondExit = await new Promise<number | null>((resolve) => second.once("exit", resolve));
    expect(secondExit).toBe(1);
    expect(secondOutput).toContain(`already runs on`);

    expect(await first.stop()).toEqual({ code: 0, signal: null });
    expect(liveProcesses(first)).toEqual([]);
    expect(await isAcceptingConnections(first.port)).toBe(false);
    expect(await isAcceptingConnections(clickhousePort)).toBe(false);

    const restarted = await startPlatform({ stateDir });
    running.push(restarted);
    expect(restarted.output).toContain("[start] soma/echo@1.0.0 is already published");
    expect(restarted.output.join("\n")).not.toContain("created the first-party account");
    expect(restarted.output).toContain("[start] ClickHouse migrations are up to date (database soma)");
    const echo = await fetch(`${restarted.url}/v1/capsules/soma/echo`);
    expect(echo.status).toBe(200);

    expect(await restarted.stop()).toEqual({ code: 0, signal: null });
    expect(liveProcesses(restarted)).toEqual([]);
    expect(await isAcceptingConnections(restarted.port)).toBe(false);
  });
});
