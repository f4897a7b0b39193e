import { type ChildProcess, spawn } from "node:child_process";
import { openSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { packCapsule } from "../../scripts/lib/capsule-bundle.mjs";
import { stopProcessGroup } from "../../scripts/lib/processes.mjs";

const root = path.resolve(import.meta.dirname, "../..");
const baseUrl = (inject("baseUrl") || process.env.SOMA_E2E_URL || "").replace(/\/+$/, "");
const adminToken = inject("adminToken") || process.env.SOMA_E2E_ADMIN_TOKEN || "";
const screenshots = path.join(root, "tests/e2e/screenshots");
const CHROMIUM = process.env.SOMA_CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

const run = Date.now().toString(36);
const author = `webauthor-${run}`;
const reviewer = `webreview-${run}`;
const parser = `${author}/sheet-parser`;
const tidier = `${author}/spreadsheet-tidier`;

let browser: Browser;
let scratch: string;
let axeSource: string;
let runner: ChildProcess | undefined;
const cspViolations: string[] = [];

interface AxeResult {
  violations: { id: string; impact: string | null; help: string; nodes: { target: string[] }[] }[];
}

async function api(pathname: string, init: RequestInit & { token?: string } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  return fetch(`${baseUrl}${pathname}`, { ...init, headers });
}

/**
 * Each browser gets its own client address: sign-up and token exchange are rate limited per address, and the
 * other e2e files sign up accounts against the same platform.
 */
function contextOptions() {
  return {
    baseURL: baseUrl,
    viewport: { width: 1280, height: 900 },
    extraHTTPHeaders: { "cf-connecting-ip": `198.51.100.${1 + Math.floor(Math.random() * 250)}` },
  };
}

async function newPage(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (/Content.Security.Policy/i.test(message.text())) cspViolations.push(message.text());
  });
  return page;
}

/** axe-core in the page (through the DevTools protocol, so the page's CSP stays as strict as it ships). */
async function checkAccessibility(page: Page, name: string): Promise<void> {
  await page.evaluate(axeSource);
  const result = (await page.evaluate(() =>
    (window as unknown as { axe: { run(ctx: Document, options: object): Promise<AxeResult> } }).axe.run(
      document,
      {
        runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] },
      },
    ),
  )) as AxeResult;
  const serious = result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  expect(serious, `axe on the ${name} page`).toEqual([]);
  await page.screenshot({ path: path.join(screenshots, `web-${name}.png`), fullPage: true });
}

async function bundleDir(name: string, manifest: string, main: string): Promise<Uint8Array> {
  const dir = path.join(scratch, name.replace("/", "__"));
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "capsule.yaml"), manifest);
  await writeFile(path.join(dir, "main.js"), main);
  return (await packCapsule(dir)).bytes;
}

function manifest(name: string, description: string, extra: { permissions: string[]; dependencies: string }) {
  return `apiVersion: soma.dev/v1
kind: TaskCapsule
metadata:
  name: ${name}
  version: 1.0.0
  category: Data
  tags: [spreadsheet, csv]
  license: MIT
spec:
  description: ${description}
  runtime: worker
  entrypoint: main.js
  permissions: [${extra.permissions.join(", ")}]
  dependencies: ${extra.dependencies}
  tokenEstimate: { planning: 0, execution: 50 }
  inputs: { type: object }
  outputs: { type: object }
  pricing: { model: free, amountUsd: 0 }
`;
}

beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "soma-web-test-"));
  await mkdir(screenshots, { recursive: true });
  axeSource = await readFile(path.join(root, "node_modules/axe-core/axe.min.js"), "utf8");
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
});

afterAll(async () => {
  await browser?.close();
  if (runner?.pid) await stopProcessGroup(runner.pid, 15_000);
  await rm(scratch, { recursive: true, force: true });
});

describe("the web app, driven in Chromium against the running platform", () => {
  let authorKey = "";
  let reviewerKey = "";
  let calculatorProject = "";
  let authorContext: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    authorContext = await browser.newContext(contextOptions());
    page = await newPage(authorContext);
  });

  afterAll(async () => {
    await authorContext?.close();
  });

  it("serves the catalog with featured, trending and collections rows under a strict CSP, and is accessible", async () => {
    const json = { "content-type": "application/json" };
    const featured = await api("/v1/featured", {
      method: "PUT",
      token: adminToken,
      headers: json,
      body: JSON.stringify({ capsules: ["soma/text-stats", "soma/json-transform"] }),
    });
    expect(featured.status).toBe(200);
    const created = await api("/v1/collections", {
      method: "POST",
      token: adminToken,
      headers: json,
      body: JSON.stringify({ title: `Starter kit ${run}`, visibility: "public", curated: true }),
    });
    expect(created.status).toBe(201);
    const collection = ((await created.json()) as { collection: { id: string } }).collection.id;
    const added = await api(`/v1/collections/${collection}/items`, {
      method: "POST",
      token: adminToken,
      headers: json,
      body: JSON.stringify({ capsule: "soma/echo" }),
    });
    expect(added.status).toBeLessThan(300);

    const response = await page.goto("/");
    expect(response?.headers()["content-security-policy"]).toContain("script-src 'self'");
    await page.getByRole("heading", { name: "Task Capsules" }).waitFor();
    await page.locator("#results .card").first().waitFor();
    expect(await page.locator("#results .card").count()).toBeGreaterThan(3);
    const featuredRow = page.getByRole("region", { name: "Featured" });
    await featuredRow.getByRole("link", { name: "soma/text-stats" }).waitFor();
    await page
      .getByRole("region", { name: "Collections" })
      .getByRole("link", { name: /Starter kit/ })
      .click();
    await page.getByRole("heading", { name: `Starter kit ${run}`, level: 1 }).waitFor();
    await page.getByRole("link", { name: "soma/echo" }).waitFor();
    await checkAccessibility(page, "collection");
    await page.goto("/#/?sort=rating&view=list&category=Testing");
    await page.locator("#results.list .card").first().waitFor();
    expect(await page.getByLabel("Category").inputValue()).toBe("Testing");
    // npm start verifies the first-party account, so only its capsules pass the filter, each with the badge.
    // The hash changes without a reload, so the previous results stay on screen until the filtered answer
    // is drawn: wait for that answer, then for the cards to show exactly its items.
    const verifiedAnswer = page.waitForResponse(
      (r) => r.url().includes("/v1/capsules?") && r.url().includes("verified=true"),
    );
    await page.goto("/#/?verified=1&sort=name");
    const verified = (await (await verifiedAnswer).json()) as {
      items: { name: string; publisher: { verified: boolean } }[];
    };
    expect(await page.getByLabel("Verified publishers only").isChecked()).toBe(true);
    expect(verified.items.length).toBeGreaterThan(0);
    expect(verified.items.every((i) => i.publisher.verified && i.name.startsWith("soma/"))).toBe(true);
    await expect
      .poll(() => page.locator("#results .card h3").allTextContents(), { timeout: 10_000 })
      .toEqual(verified.items.map((i) => i.name));
    expect(await page.locator("#results .card", { hasText: "Verified publisher" }).count()).toBe(
      verified.items.length,
    );
    await page.goto("/");
    await page.locator("#results .card").first().waitFor();
    await checkAccessibility(page, "catalog");
  });

  it("signs up in the browser, shows the API key once and signs in with it", async () => {
    await page.goto("/#/signin");
    await page.getByLabel("Handle").fill(author);
    await page.getByLabel("Email").fill(`${author}@example.com`);
    await checkAccessibility(page, "signin");
    await page.getByRole("button", { name: "Sign up" }).click();
    const key = page.locator("#new-key");
    await key.waitFor();
    authorKey = await key.inputValue();
    expect(authorKey).toMatch(/^soma_/);
    await page.getByRole("button", { name: "I saved it, continue" }).click();
    await page.getByText(`Signed in as ${author}`).waitFor();
  });

  it("publishes a capsule by dropping its bundle and shows the submission timeline", async () => {
    // The dependency goes in through the API; it is low risk, so it is published at once.
    const dependency = await bundleDir(
      parser,
      manifest(parser, "Parses spreadsheet rows into records.", { permissions: [], dependencies: "{}" }),
      "export default { async run(input) { return { rows: input.rows ?? [] }; } };\n",
    );
    const published = await api("/v1/capsules", {
      method: "POST",
      token: authorKey,
      headers: { "content-type": "application/gzip" },
      body: Buffer.from(dependency),
    });
    expect(published.status, await published.clone().text()).toBe(201);

    // eval and network egress raise the risk above the automatic threshold: a reviewer has to decide.
    const bytes = await bundleDir(
      tidier,
      manifest(tidier, "Tidies messy spreadsheet exports into clean CSV.", {
        permissions: ["artifacts.write", "network.egress:api.example.com"],
        dependencies: `{ ${parser}: "^1.0.0" }`,
      }),
      "export default { async run(input) { return { formula: eval(String(input.formula ?? '1')) }; } };\n",
    );
    const file = path.join(scratch, "spreadsheet-tidier-1.0.0.tar.gz");
    await writeFile(file, bytes);
    await page.goto("/#/publish");
    await page.getByRole("heading", { name: "Publish a capsule" }).waitFor();
    await checkAccessibility(page, "publish");
    // A real drop: a File in a DataTransfer, dispatched on the drop zone as the browser does for a dragged file.
    await page.locator(".drop").evaluate(
      (zone, { base64, name }) => {
        const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: "application/gzip" }));
        zone.dispatchEvent(
          new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }),
        );
        zone.dispatchEvent(
          new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }),
        );
      },
      { base64: Buffer.from(bytes).toString("base64"), name: path.basename(file) },
    );
    await page.getByRole("list", { name: "Submission timeline" }).waitFor();
    await page.getByText("Waiting for a reviewer").first().waitFor();
    expect(await page.getByRole("table", { name: /Findings/ }).textContent()).toMatch(/eval/i);
    await checkAccessibility(page, "submission");
  });

  it("lets a reviewer approve it from the review queue with notes", async () => {
    const created = await api("/v1/accounts", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "cf-connecting-ip": `198.51.100.${1 + Math.floor(Math.random() * 250)}`,
      },
      body: JSON.stringify({ handle: reviewer, email: `${reviewer}@example.com` }),
    });
    expect(created.status).toBe(201);
    reviewerKey = ((await created.json()) as { apiKey: string }).apiKey;
    const roles = await api(`/v1/accounts/${reviewer}/roles`, {
      method: "POST",
      token: adminToken,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ roles: ["reviewer", "admin"] }),
    });
    expect(roles.status).toBe(200);

    const context = await browser.newContext(contextOptions());
    try {
      const rp = await newPage(context);
      await rp.goto("/#/signin?next=%23%2Freview");
      await rp.getByLabel("API key", { exact: true }).fill(reviewerKey);
      await rp.getByRole("button", { name: "Sign in" }).click();
      await rp.getByRole("heading", { name: "Review", level: 1 }).waitFor();
      const item = rp.locator("li.panel", { hasText: `${tidier}@1.0.0` });
      await item.waitFor();
      expect(await item.textContent()).toMatch(/Risk score 0\.\d\d/);
      await checkAccessibility(rp, "review");
      await item.getByLabel("Approve and publish").check();
      await item
        .getByLabel(/Notes for the author/)
        .fill("Reviewed the eval use: it only evaluates the input formula.");
      await item.getByRole("button", { name: "Record the decision" }).click();
      await rp.getByText(`Decision recorded for ${tidier}@1.0.0.`).waitFor();

      // The next version asks for more: the queue shows what changed since the published one.
      const next = await bundleDir(
        `${tidier}-next`,
        manifest(tidier, "Tidies messy spreadsheet exports into clean CSV.", {
          permissions: ["artifacts.write", "artifacts.read", "network.egress:api.example.com"],
          dependencies: `{ ${parser}: "^1.0.0" }`,
        }).replace("version: 1.0.0", "version: 1.1.0"),
        "export default { async run(input) { return { formula: eval(String(input.formula ?? '1')) }; } };\n",
      );
      const submitted = await api("/v1/capsules", {
        method: "POST",
        token: authorKey,
        headers: { "content-type": "application/gzip" },
        body: Buffer.from(next),
      });
      expect(submitted.status, await submitted.clone().text()).toBe(201);
      await rp.goto("/#/review");
      const second = rp.locator("li.panel", { hasText: `${tidier}@1.1.0` });
      await second.getByText("Changes since 1.0.0").waitFor();
      expect(await second.locator(".diff").textContent()).toContain(
        '+ spec.permissions.1 = "artifacts.read"',
      );
      await second.getByLabel("Request changes").check();
      await second.getByRole("button", { name: "Record the decision" }).click();
      // Notes are required for a change request: the form refuses to send without them.
      const notes = second.getByLabel(/Notes for the author/);
      expect(await notes.evaluate((el) => (el as HTMLTextAreaElement).validity.valueMissing)).toBe(true);
      await notes.fill("Say why the capsule needs to read project files.");
      await second.getByRole("button", { name: "Record the decision" }).click();
      await rp.getByText(`Decision recorded for ${tidier}@1.1.0.`).waitFor();

      await rp.goto("/#/review?tab=moderation");
      await rp
        .getByText(/No reviews are waiting for moderation|Restore/)
        .first()
        .waitFor();
      await checkAccessibility(rp, "moderation");

      await rp.goto("/#/dashboards/admin");
      await rp
        .getByRole("table", { name: "Usage and revenue per tenant" })
        .or(rp.getByText("No tenant"))
        .first()
        .waitFor();
      await checkAccessibility(rp, "dashboard-admin");
    } finally {
      await context.close();
    }
    // The author's timeline follows the decision on its own (it refreshes every few seconds).
    await page.getByText(`Approved by ${reviewer}`).waitFor({ timeout: 30_000 });
  });

  it("writes a manifest in the browser, checked against the published schema as you type, and submits it", async () => {
    await page.goto("/#/publish?mode=write");
    const editor = page.getByLabel("capsule.yaml");
    await editor.waitFor();
    const valid = (await editor.inputValue()).replace(`${author}/hello`, `${author}/hello-editor`);
    await editor.fill(valid.replace("runtime: worker", "runtime: docker"));
    await page.getByText("Fix these before submitting:").waitFor();
    expect(await page.locator("#manifest-check").textContent()).toContain("spec.runtime");
    expect(await page.getByRole("button", { name: "Pack and submit" }).isDisabled()).toBe(true);
    await editor.fill(valid.replace(`${author}/hello-editor`, "someone-else/hello"));
    await page.getByText("must be in your namespace").waitFor();
    await editor.fill("metadata: [unclosed");
    await page
      .getByText(/line \d+/)
      .first()
      .waitFor();
    await editor.fill(valid);
    await page.getByText("The manifest matches the published schema.").waitFor();
    await checkAccessibility(page, "publish-editor");
    await page.getByRole("button", { name: "Pack and submit" }).click();
    await page.getByRole("list", { name: "Submission timeline" }).waitFor();
    await page.getByText("Approved automatically: the risk is low").waitFor();
  });

  it("finds the capsule by a misspelled search as you type and shows its page", async () => {
    await page.goto("/");
    await page.getByLabel("Search capsules").pressSequentially("spredsheet tidyer", { delay: 30 });
    await page.waitForURL(/q=spredsheet/);
    const card = page.locator("#results .card", { hasText: tidier });
    await card.waitFor();
    await card.getByRole("link", { name: tidier }).click();
    await page.getByRole("heading", { name: tidier, level: 1 }).waitFor();
    await page.getByText("Send requests to api.example.com on the internet").waitFor();
    expect(await page.getByText("Verified publisher").count()).toBe(0);
    await page.getByRole("link", { name: parser }).waitFor();
    await page.getByText(`npx soma verify ${tidier}@1.0.0`).waitFor();
    await checkAccessibility(page, "capsule");
  });

  it("installs it with its dependency after the permission dialog and shows the resolved tree", async () => {
    await page.getByRole("link", { name: "Install" }).click();
    const dialog = page.getByRole("dialog", { name: `Install ${tidier}` });
    await dialog.waitFor();
    await dialog.getByText(`${tidier} and its 1 dependency`).waitFor();
    const approve = dialog.getByRole("button", { name: "Approve and continue" });
    expect(await approve.isDisabled()).toBe(true);
    await checkAccessibility(page, "install-permissions");
    await dialog.getByLabel(/Write files into your project/).check();
    await dialog.getByLabel(/Send requests to api\.example\.com/).check();
    await approve.click();
    await dialog.getByLabel(/Token budget/).fill("20000");
    await dialog.getByRole("button", { name: "Install", exact: true }).click();
    await dialog.getByText(`Installed ${tidier}@1.0.0 with 1 dependency`).waitFor();
    const tree = await dialog.locator(".tree").textContent();
    expect(tree).toContain(`${tidier}@1.0.0`);
    expect(tree).toContain(`${parser}@1.0.0`);
    await checkAccessibility(page, "install-done");
    await dialog.getByRole("button", { name: "Done" }).click();

    const installs = (await (await api("/v1/installs", { token: authorKey })).json()) as {
      items: { capsule: string; budgetTokens: number | null }[];
    };
    expect(installs.items).toEqual(
      expect.arrayContaining([expect.objectContaining({ capsule: tidier, budgetTokens: 20000 })]),
    );
  });

  it("explains a failed install in words", async () => {
    await page.goto(`/#/capsules/${tidier}?install=1`);
    const dialog = page.getByRole("dialog", { name: `Install ${tidier}` });
    await dialog.getByLabel(/Write files into your project/).check();
    await dialog.getByLabel(/Send requests to api\.example\.com/).check();
    await dialog.getByRole("button", { name: "Approve and continue" }).click();
    // A budget beyond the API's limit is refused with its validation message.
    await dialog.getByLabel(/Token budget/).fill("5000000000");
    await dialog.getByRole("button", { name: "Install", exact: true }).click();
    await dialog.getByRole("alert").waitFor();
    expect(await dialog.getByRole("alert").textContent()).toMatch(/The install failed: .*budgetTokens/);
    await page.keyboard.press("Escape");
  });

  it("launches the calculator example in one click and watches it complete over the WebSocket", async () => {
    const runnerLog = openSync(path.join(scratch, "runner.log"), "a");
    runner = spawn(
      process.execPath,
      [path.join(root, "cli/soma.mjs"), "runner", "--url", baseUrl, "--id", `web-${run}`],
      {
        cwd: root,
        env: { ...process.env, SOMA_TOKEN: authorKey },
        detached: true,
        stdio: ["ignore", runnerLog, runnerLog],
      },
    );
    await page.goto("/#/projects");
    await checkAccessibility(page, "projects");
    await page.getByRole("button", { name: "Launch the calculator example" }).click();
    await page.waitForURL(/#\/projects\/[a-f0-9]{64}$/);
    calculatorProject = new URL(page.url()).hash;
    await page.getByRole("img", { name: /Task graph/ }).waitFor();
    await page.getByText("Live", { exact: true }).waitFor();
    try {
      await page.locator('#project-status[data-status="completed"]').waitFor({ timeout: 180_000 });
    } catch (error) {
      // Say where it stopped: the task table as the page shows it, and what the runner printed.
      const tasks = await page.getByRole("table", { name: /Tasks with their gate scores/ }).textContent();
      const log = await readFile(path.join(scratch, "runner.log"), "utf8").catch(() => "");
      throw new Error(`${String(error)}\ntasks: ${tasks}\nrunner: ${log.slice(-2000)}`);
    }
    expect(await page.locator('.dag [data-task="run-tests"]').getAttribute("data-status")).toBe("completed");
    expect(await page.locator(".dag .node").count()).toBe(10);
    await page.getByRole("button", { name: "Download all artefacts (.tar.gz)" }).waitFor();
    await page.getByRole("button", { name: "calculator/__main__.py" }).waitFor();
    const meter = page.getByRole("meter", { name: "Token budget used" });
    expect(Number(await meter.getAttribute("aria-valuenow"))).toBeGreaterThan(0);
    const download = page.waitForEvent("download");
    await page.getByRole("button", { name: "Download all artefacts (.tar.gz)" }).click();
    expect((await download).suggestedFilename()).toMatch(/\.tar\.gz$/);
    await checkAccessibility(page, "live");
  }, 240_000);

  it("rates a capsule it installed and ran; another account votes the review helpful and reports it", async () => {
    // The calculator project above ran soma/readme-writer for this account; an install makes it eligible.
    const installed = await api("/v1/installs", {
      method: "POST",
      token: authorKey,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ capsule: "soma/readme-writer", acceptPermissions: ["artifacts.write"] }),
    });
    expect(installed.status, await installed.clone().text()).toBe(201);
    await page.goto("/#/capsules/soma/readme-writer");
    await page.getByRole("heading", { name: "Rate this capsule" }).waitFor();
    await page.locator("p.dim", { hasText: "By soma" }).getByText("Verified publisher").waitFor();
    await page.getByLabel("Stars").selectOption("4");
    await page.getByLabel("Review (optional)").fill("Clear READMEs straight from the spec.");
    await page.getByRole("button", { name: "Save rating" }).click();
    await page.getByText("Clear READMEs straight from the spec.").waitFor();
    await page.getByText(/from 1 rating\b/).waitFor();
    expect(await page.getByRole("row", { name: /4 stars/ }).textContent()).toMatch(/1$/);

    const context = await browser.newContext(contextOptions());
    try {
      const rp = await newPage(context);
      await rp.goto("/#/signin?next=%23%2Fcapsules%2Fsoma%2Freadme-writer");
      await rp.getByLabel("API key", { exact: true }).fill(reviewerKey);
      await rp.getByRole("button", { name: "Sign in" }).click();
      const review = rp.locator("li.review", { hasText: "Clear READMEs straight from the spec." });
      await review.waitFor();
      await review.getByRole("button", { name: "Helpful", exact: true }).click();
      await review.getByText("Thanks, your vote counts.").waitFor();
      await review.getByRole("button", { name: "Report" }).click();
      await review.getByLabel("Why should a reviewer look at this?").fill("Testing the report path.");
      await review.getByRole("button", { name: "Send report" }).click();
      await review.getByText(/^Reported\./).waitFor();
      await checkAccessibility(rp, "capsule-reviews");
    } finally {
      await context.close();
    }
  });

  it("holds a task below the quality threshold for a human and completes it once approved in the live view", async () => {
    const spec = {
      name: "Gate check",
      spec: {
        tasks: [
          {
            id: "echo",
            capsule: "soma/echo@^1",
            inputs: { text: "hello" },
            successCriteria: ["file:NOTES.md"],
          },
        ],
      },
      budget: { tokens: 20_000 },
      qualityThreshold: 1,
      autoRemediations: 0,
    };
    await page.goto("/#/projects");
    await page.getByText("Or edit a spec").click();
    await page.getByLabel("Project spec (JSON)").fill(JSON.stringify(spec));
    await page.getByRole("button", { name: "Launch this spec" }).click();
    await page.waitForURL(/#\/projects\/[a-f0-9]{64}$/);
    const held = page.getByRole("heading", { name: "Task echo is waiting for you" });
    await held.waitFor({ timeout: 60_000 });
    await checkAccessibility(page, "live-review");
    await page.getByRole("button", { name: "Approve", exact: true }).click();
    await page.locator('#project-status[data-status="completed"]').waitFor({ timeout: 60_000 });
    expect(await held.count()).toBe(0);
  });

  it("shows the new events on the dashboards, refreshing on its own, and exports CSV", async () => {
    await page.goto("/#/dashboards/platform");
    // Events reach ClickHouse through the queue within seconds; the dashboard refreshes every 10 s.
    await page
      .locator(".facts div", { hasText: "Executions" })
      .filter({ hasNotText: /^Executions\s*0$/ })
      .first()
      .waitFor();
    await expect
      .poll(
        async () =>
          Number(
            (
              (await page.locator(".facts div", { hasText: "Installs" }).locator("dd").textContent()) ?? ""
            ).replace(/,/g, ""),
          ),
        {
          timeout: 45_000,
          interval: 1000,
        },
      )
      .toBeGreaterThan(0);
    await expect
      .poll(
        async () =>
          Number(
            (
              (await page
                .locator(".facts div", { hasText: /^Executions/ })
                .locator("dd")
                .textContent()) ?? ""
            ).replace(/,/g, ""),
          ),
        {
          timeout: 45_000,
          interval: 1000,
        },
      )
      .toBeGreaterThan(0);
    await checkAccessibility(page, "dashboard-platform");
    const csv = page.waitForEvent("download");
    await page.getByRole("button", { name: "Export CSV" }).click();
    expect((await csv).suggestedFilename()).toMatch(/^platform-.*\.csv$/);

    await page.goto("/#/dashboards/me");
    await expect
      .poll(
        async () =>
          Number(
            (
              (await page
                .locator(".facts div", { hasText: /^Tokens/ })
                .locator("dd")
                .textContent()) ?? ""
            ).replace(/,/g, ""),
          ),
        {
          timeout: 45_000,
          interval: 1000,
        },
      )
      .toBeGreaterThan(0);
    await page.getByText("Tokens per period, then the forecast").waitFor();
    await checkAccessibility(page, "dashboard-me");

    await page.goto("/#/dashboards/capsule");
    await page.getByRole("list", { name: "Your capsules" }).getByRole("link", { name: tidier }).click();
    await page.waitForURL(/capsule=/);
    await expect
      .poll(
        async () =>
          Number(
            (
              (await page.locator(".facts div", { hasText: "Installs" }).locator("dd").textContent()) ?? ""
            ).replace(/,/g, ""),
          ),
        {
          timeout: 45_000,
          interval: 1000,
        },
      )
      .toBeGreaterThan(0);
    await checkAccessibility(page, "dashboard-capsule");
  });

  it("works from the keyboard and at 375 px wide, with no CSP violations anywhere", async () => {
    await page.goto("/");
    await page.locator("#results .card").first().waitFor();
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Skip to content");
    await page.keyboard.press("Enter");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("main");
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("search");

    // The install dialog opens from the keyboard, holds the focus, and Escape closes it and its URL.
    await page.goto(`/#/capsules/${tidier}`);
    await page.getByRole("heading", { name: tidier, level: 1 }).waitFor();
    await page.getByRole("link", { name: "Install" }).focus();
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: `Install ${tidier}` });
    await dialog.waitFor();
    expect(await dialog.evaluate((d) => d.contains(document.activeElement))).toBe(true);
    await page.keyboard.press("Tab");
    expect(await dialog.evaluate((d) => d.contains(document.activeElement))).toBe(true);
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    // The native dialog hides at once; its close event, which drops the query from the URL, comes after.
    await expect.poll(() => page.url()).not.toContain("install=1");

    await page.setViewportSize({ width: 375, height: 800 });
    for (const [name, hash] of [
      ["catalog-375", "/"],
      ["capsule-375", `/#/capsules/${tidier}`],
      ["dashboard-375", "/#/dashboards/platform"],
      ["publish-375", "/#/publish"],
      ["live-375", `/${calculatorProject}`],
    ] as const) {
      await page.goto(hash);
      await page.locator("h1").first().waitFor();
      await page.waitForLoadState("networkidle");
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      const wide = await page.evaluate(() =>
        [...document.querySelectorAll("body *")]
          .filter(
            (e) =>
              e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest(".scroll, .dag-wrap"),
          )
          .slice(0, 5)
          .map((e) => `${e.tagName.toLowerCase()}.${e.className}: ${(e.textContent ?? "").slice(0, 40)}`),
      );
      expect(overflow, `${name}: ${wide.join(" | ")}`).toBeLessThanOrEqual(0);
      await checkAccessibility(page, name);
    }
    expect(cspViolations).toEqual([]);
  });
});
