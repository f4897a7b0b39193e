import { WorkerEntrypoint } from "cloudflare:workers";
import {
  artifactKey,
  artifactPrefix,
  type CapsuleHostProps,
  checkArtifactPath,
  MAX_ARTIFACT_BYTES,
  requirePermission,
} from "../shared/agents/capabilities";
import { declaredEgress, type EgressInit, type EgressResponse } from "../shared/agents/egress";
import { meteredModelCall } from "../shared/agents/metered-model";
import type { ModelRequest } from "../shared/agents/model-gateway";
import { AppError } from "../shared/errors";
import { Logger } from "../shared/observability/logger";

/**
 * The only door out of a capsule's sandbox. Each method checks the permission the capsule declared before
 * touching project artefacts, the network or the model gateway; everything else is unreachable.
 */
export class CapsuleHost extends WorkerEntrypoint<Env, CapsuleHostProps> {
  async readArtifact(path: string): Promise<string | null> {
    requirePermission(this.ctx.props, "artifacts.read");
    const object = await this.env.BUNDLES.get(artifactKey(this.ctx.props.projectId, checkArtifactPath(path)));
    return object ? object.text() : null;
  }

  async listArtifacts(): Promise<string[]> {
    requirePermission(this.ctx.props, "artifacts.read");
    const prefix = artifactPrefix(this.ctx.props.projectId);
    const paths: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.env.BUNDLES.list({ prefix, cursor });
      paths.push(...page.objects.map((o) => o.key.slice(prefix.length)));
      cursor = page.truncated ? page.cursor : undefined;
    } while (cursor && paths.length < 10_000);
    return paths.sort();
  }

  async writeArtifact(path: string, content: string): Promise<{ path: string; size: number }> {
    requirePermission(this.ctx.props, "artifacts.write");
    const clean = checkArtifactPath(path);
    const bytes = new TextEncoder().encode(content);
    if (bytes.length > MAX_ARTIFACT_BYTES) {
      throw new AppError("PAYLOAD_TOO_LARGE", `Artefact ${clean} is larger than ${MAX_ARTIFACT_BYTES} bytes`);
    }
    await this.env.BUNDLES.put(artifactKey(this.ctx.props.projectId, clean), bytes, {
      customMetadata: { taskId: this.ctx.props.taskId, attemptId: this.ctx.props.attemptId },
    });
    return { path: clean, size: bytes.length };
  }

  async egress(url: string, init?: EgressInit): Promise<EgressResponse> {
    return declaredEgress(this.ctx.props.capsule, this.ctx.props.permissions, url, init);
  }

  async llm(request: ModelRequest) {
    requirePermission(this.ctx.props, "llm");
    return meteredModelCall(this.env, this.ctx.props, request);
  }

  async log(message: string): Promise<void> {
    requirePermission(this.ctx.props, "logging");
    new Logger({
      source: "capsule",
      capsule: this.ctx.props.capsule,
      projectId: this.ctx.props.projectId,
      taskId: this.ctx.props.taskId,
    }).info(message.slice(0, 4000));
  }
}
