import { Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { z } from "zod";
import {
  requireAccount,
  requirePrincipal,
  requireScope,
  resolvePrincipal,
} from "../../shared/auth/principal";
import { bearerFromWebSocketProtocols, LIVE_PROTOCOL } from "../../shared/auth/websocket-bearer";
import { database } from "../../shared/db/client";
import { AppError } from "../../shared/errors";
import { artifactArchive, listArtifacts, readArtifact } from "../../shared/kamachiq/artifacts";
import {
  createProject,
  listProjects,
  listReviewTasks,
  projectFor,
  unwrap,
} from "../../shared/kamachiq/projects";
import { createProjectSchema } from "../../shared/kamachiq/spec";
import { formatTraceparent } from "../../shared/observability/trace";
import type { AppEnv } from "../context";
import { signedIn, withAccount } from "../middleware/guards";
import { decodePathTail, jsonBody, parseOrThrow, pathParams, queryParams } from "../validate";

const projectParams = z.object({ id: z.string().regex(/^[a-f0-9]{64}$/, "not a project id") });
const taskParams = projectParams.extend({
  taskId: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, "not a task id"),
});
const limitQuery = z.object({ limit: z.coerce.number().int().min(1).max(200).default(50) }).strict();

/** Resolves the caller of a browser WebSocket from the token it offered as a subprotocol (no headers there). */
const webSocketBearer = createMiddleware<AppEnv>(async (c, next) => {
  const token = bearerFromWebSocketProtocols(c.req.header("sec-websocket-protocol"));
  if (token && !c.get("principal")) {
    const principal = await resolvePrincipal(c.env, database(c.env.DB), `Bearer ${token}`);
    // requestContext only saw the Authorization header: hold this credential to its key scopes here.
    requireScope(principal, c.req.method, new URL(c.req.url).pathname);
    c.set("principal", principal);
  }
  await next();
});

export const projectRoutes = new Hono<AppEnv>()
  .post("/", withAccount, jsonBody(createProjectSchema), async (c) => {
    const owner = requireAccount(c.get("principal"));
    const project = await createProject(
      c.env,
      database(c.env.DB),
      owner,
      c.req.valid("json"),
      formatTraceparent(c.get("trace")),
    );
    return c.json({ project }, 201);
  })
  .get("/", withAccount, queryParams(limitQuery), async (c) => {
    const owner = requireAccount(c.get("principal"));
    return c.json({
      items: await listProjects(database(c.env.DB), owner.accountId, c.req.valid("query").limit),
    });
  })
  .get("/:id", signedIn, pathParams(projectParams), async (c) => {
    const stub = await projectFor(
      c.env,
      database(c.env.DB),
      requirePrincipal(c.get("principal")),
      c.req.valid("param").id,
    );
    return c.json({ project: unwrap(await stub.snapshot()) });
  })
  .post("/:id/cancel", signedIn, pathParams(projectParams), async (c) => {
    const principal = requirePrincipal(c.get("principal"));
    const stub = await projectFor(c.env, database(c.env.DB), principal, c.req.valid("param").id, "manage");
    return c.json({
      project: unwrap(await stub.cancel(principal.handle ?? "admin", formatTraceparent(c.get("trace")))),
    });
  })
  .get("/:id/report", signedIn, pathParams(projectParams), async (c) => {
    const stub = await projectFor(
      c.env,
      database(c.env.DB),
      requirePrincipal(c.get("principal")),
      c.req.valid("param").id,
    );
    return c.json({ report: unwrap(await stub.report()) });
  })
  .get("/:id/ws", webSocketBearer, signedIn, pathParams(projectParams), async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return c.json(
        {
          error: {
            code: "BAD_REQUEST",
            message: "Expected a WebSocket upgrade",
            requestId: c.get("requestId"),
          },
        },
        426,
      );
    }
    const stub = await projectFor(
      c.env,
      database(c.env.DB),
      requirePrincipal(c.get("principal")),
      c.req.valid("param").id,
    );
    const upgraded = await stub.fetch(c.req.raw);
    if (!bearerFromWebSocketProtocols(c.req.header("sec-websocket-protocol"))) return upgraded;
    return new Response(null, {
      status: upgraded.status,
      webSocket: upgraded.webSocket,
      headers: { "sec-websocket-protocol": LIVE_PROTOCOL },
    });
  })
  .get("/:id/events", signedIn, pathParams(projectParams), async (c) => {
    const stub = await projectFor(
      c.env,
      database(c.env.DB),
      requirePrincipal(c.get("principal")),
      c.req.valid("param").id,
    );
    return stub.fetch(c.req.raw);
  })
  .get("/:id/artifacts", signedIn, pathParams(projectParams), async (c) => {
    const { id } = c.req.valid("param");
    await projectFor(c.env, database(c.env.DB), requirePrincipal(c.get("principal")), id);
    return c.json({ items: await listArtifacts(c.env.BUNDLES, id) });
  })
  .get("/:id/artifacts.tar.gz", signedIn, pathParams(projectParams), async (c) => {
    const { id } = c.req.valid("param");
    await projectFor(c.env, database(c.env.DB), requirePrincipal(c.get("principal")), id);
    return new Response(await artifactArchive(c.env.BUNDLES, id), {
      headers: {
        "content-type": "application/gzip",
        "content-disposition": `attachment; filename="project-${id.slice(0, 12)}-artifacts.tar.gz"`,
      },
    });
  })
  .get("/:id/artifacts/*", signedIn, async (c) => {
    const { id } = parseOrThrow(projectParams, { id: c.req.param("id") ?? "" }, "path");
    await projectFor(c.env, database(c.env.DB), requirePrincipal(c.get("principal")), id);
    const path = decodePathTail(
      new URL(c.req.url).pathname.split(`/v1/projects/${id}/artifacts/`)[1] ?? "",
      "artefact path",
    );
    const object = await readArtifact(c.env.BUNDLES, id, path);
    return new Response(object.body, {
      headers: {
        "content-type": path.endsWith(".json") ? "application/json" : "text/plain; charset=utf-8",
        "content-length": String(object.size),
      },
    });
  })
  .get(
    "/:id/logs/:attemptId",
    signedIn,
    pathParams(
      projectParams.extend({ attemptId: z.string().regex(/^att_[a-f0-9]{32}$/, "not an attempt id") }),
    ),
    async (c) => {
      const { id, attemptId } = c.req.valid("param");
      const stub = await projectFor(c.env, database(c.env.DB), requirePrincipal(c.get("principal")), id);
      const entry = unwrap(await stub.report()).logs.find((l) => l.attemptId === attemptId);
      const object = entry
        ? await c.env.BUNDLES.get(`projects/${id}/logs/${entry.taskId}/${attemptId}.log`)
        : null;
      if (!object) throw new AppError("NOT_FOUND", `No log for attempt ${attemptId}`);
      return new Response(object.body, { headers: { "content-type": "text/plain; charset=utf-8" } });
    },
  )
  .post(
    "/:id/tasks/:taskId/review",
    signedIn,
    pathParams(taskParams),
    jsonBody(
      z
        .object({
          decision: z.enum(["approve", "reject", "request_changes"]),
          feedback: z.string().max(20_000).default(""),
        })
        .strict()
        .refine((b) => b.decision === "approve" || b.feedback.trim().length > 0, {
          message: "explain a rejection or a change request in feedback",
          path: ["feedback"],
        }),
    ),
    async (c) => {
      const principal = requirePrincipal(c.get("principal"));
      const { id, taskId } = c.req.valid("param");
      const { decision, feedback } = c.req.valid("json");
      const stub = await projectFor(c.env, database(c.env.DB), principal, id);
      return c.json({
        project: unwrap(
          await stub.reviewTask(
            taskId,
            decision,
            feedback,
            principal.handle ?? "admin",
            formatTraceparent(c.get("trace")),
          ),
        ),
      });
    },
  );

export const reviewTaskRoutes = new Hono<AppEnv>().get("/", signedIn, queryParams(limitQuery), async (c) => {
  const items = await listReviewTasks(
    database(c.env.DB),
    requirePrincipal(c.get("principal")),
    c.req.valid("query").limit,
  );
  return c.json({ items });
});
