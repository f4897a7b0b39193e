import { beforeAll, describe, expect, it } from "vitest";
import { bearerFromWebSocketProtocols } from "../../workers/shared/auth/websocket-bearer";
import { api } from "../helpers";
import { createProject, publishReviewer, publishWorker, signup, waitForStatus } from "../kamachiq-helpers";

const QUICK = `export default { async run() {
  return { files: [{ path: "a.py", content: '"""Generated."""\\n\\n\\ndef run():\\n    """Run it."""\\n    return 1\\n' }] };
} };`;

let owner: Awaited<ReturnType<typeof signup>>;
let stranger: Awaited<ReturnType<typeof signup>>;
let projectId = "";

async function accessToken(apiKey: string): Promise<string> {
  const res = await api("/v1/auth/token", { method: "POST", json: { apiKey } });
  return ((await res.json()) as { accessToken: string }).accessToken;
}

/** A browser's handshake: no Authorization header, the token offered as a subprotocol. */
function browserUpgrade(id: string, protocols: string): Promise<Response> {
  return api(`/v1/projects/${id}/ws`, {
    headers: { upgrade: "websocket", "sec-websocket-protocol": protocols },
  });
}

beforeAll(async () => {
  await publishReviewer();
  owner = await signup();
  stranger = await signup();
  await publishWorker(owner.apiKey, `${owner.handle}/quick`, QUICK);
  const res = await createProject(owner.apiKey, {
    name: "live",
    spec: { tasks: [{ id: "q", capsule: `${owner.handle}/quick` }] },
    budget: { tokens: 100_000 },
  });
  expect(res.status, await res.clone().text()).toBe(201);
  projectId = ((await res.json()) as { project: { id: string } }).project.id;
  await waitForStatus(owner.apiKey, projectId, ["completed"]);
});

describe("GET /v1/projects/:id/ws from a browser (token as a subprotocol)", () => {
  it("upgrades with the owner's access token offered as a subprotocol and answers with the live protocol only", async () => {
    const res = await browserUpgrade(
      projectId,
      `soma.live.v1, soma.bearer.${await accessToken(owner.apiKey)}`,
    );
    expect(res.status).toBe(101);
    expect(res.headers.get("sec-websocket-protocol")).toBe("soma.live.v1");
    const ws = res.webSocket!;
    const first = new Promise<{ type: string; project: { status: string } }>((resolve) =>
      ws.addEventListener("message", (event) => resolve(JSON.parse(String(event.data)))),
    );
    ws.accept();
    expect(await first).toMatchObject({ type: "snapshot", project: { status: "completed" } });
    ws.close();
  });

  it("refuses an anonymous handshake, a bad token and a token offered without the live protocol", async () => {
    expect((await browserUpgrade(projectId, "soma.live.v1")).status).toBe(401);
    expect((await browserUpgrade(projectId, "soma.live.v1, soma.bearer.not-a-token")).status).toBe(401);
    const token = await accessToken(owner.apiKey);
    expect((await browserUpgrade(projectId, `chat, soma.bearer.${token}`)).status).toBe(401);
  });

  it("does not let another account watch the project", async () => {
    const res = await browserUpgrade(
      projectId,
      `soma.live.v1, soma.bearer.${await accessToken(stranger.apiKey)}`,
    );
    expect(res.status).toBe(404);
  });

  it("keeps the Authorization header path unchanged", async () => {
    const res = await api(`/v1/projects/${projectId}/ws`, {
      token: owner.apiKey,
      headers: { upgrade: "websocket" },
    });
    expect(res.status).toBe(101);
    expect(res.headers.get("sec-websocket-protocol")).toBeNull();
    res.webSocket!.accept();
    res.webSocket!.close();
  });
});

describe("bearerFromWebSocketProtocols", () => {
  it("takes the token only beside the live protocol and only in token characters", () => {
    expect(bearerFromWebSocketProtocols("soma.live.v1, soma.bearer.abc.def-ghi_j")).toBe("abc.def-ghi_j");
    expect(bearerFromWebSocketProtocols("soma.bearer.abc")).toBeNull();
    expect(bearerFromWebSocketProtocols("soma.live.v1, soma.bearer.")).toBeNull();
    expect(bearerFromWebSocketProtocols("soma.live.v1, soma.bearer.a b")).toBeNull();
    expect(bearerFromWebSocketProtocols(undefined)).toBeNull();
  });
});
