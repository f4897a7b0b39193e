import type { CapsuleManifest } from "../domain/manifest";

/** What a sandboxed capsule run returns to the agent. */
export type SandboxResult =
  | { ok: true; output: unknown }
  | { ok: false; error: { name: string; message: string } };

const WRAPPER_MODULE = "__soma_capsule_host.js";

/**
 * The module that hosts a capsule inside its isolate: it builds `ctx` from the HOST binding (the only way
 * out, since globalOutbound is null) and calls the capsule's default export `run(input, ctx)`.
 */
function wrapperSource(entrypoint: string): string {
  return `import capsule from ${JSON.stringify(`./${entrypoint}`)};
export default {
  async fetch(request, env) {
    const { input } = await request.json();
    const host = env.HOST;
    const ctx = Object.freeze({
      artifacts: Object.freeze({
        read: (path) => host.readArtifact(String(path)),
        write: (path, content) => host.writeArtifact(String(path), String(content)),
        list: () => host.listArtifacts(),
      }),
      fetch: (url, init) => host.egress(String(url), init ? { method: init.method, headers: init.headers, body: init.body } : undefined),
      llm: (request) => host.llm(request),
      log: (...parts) => host.log(parts.map((p) => typeof p === "string" ? p : JSON.stringify(p)).join(" ")),
    });
    try {
      if (!capsule || typeof capsule.run !== "function") throw new TypeError("the entrypoint must export default { run(input, ctx) }");
      const output = await capsule.run(input, ctx);
      return Response.json({ ok: true, output: output === undefined ? null : output });
    } catch (error) {
      return Response.json({ ok: false, error: { name: String(error?.name ?? "Error"), message: String(error?.message ?? error) } });
    }
  },
};
`;
}

/** Maps bundle files to Worker Loader modules: JavaScript as modules, everything else as text or bytes. */
function toModules(files: ReadonlyMap<string, Uint8Array>): Record<string, WorkerLoaderModule> {
  const decoder = new TextDecoder();
  const modules: Record<string, WorkerLoaderModule> = {};
  for (const [path, bytes] of files) {
    if (/\.(m?js)$/.test(path)) modules[path] = { js: decoder.decode(bytes) };
    else if (/\.(json)$/.test(path)) modules[path] = { text: decoder.decode(bytes) };
    else if (/\.(txt|md|ya?ml|py|sh|toml|cfg|ini|html|css|csv)$/.test(path))
      modules[path] = { text: decoder.decode(bytes) };
    else modules[path] = { data: bytes.slice().buffer as ArrayBuffer };
  }
  return modules;
}

/**
 * Runs a worker or planner capsule in a fresh Worker Loader isolate with no network (globalOutbound: null).
 * Its only capability is `host`, a binding that enforces the permissions the manifest declares.
 */
export async function runInSandbox(options: {
  loader: WorkerLoader;
  manifest: CapsuleManifest;
  files: ReadonlyMap<string, Uint8Array>;
  host: Fetcher;
  input: unknown;
  compatibilityDate: string;
}): Promise<SandboxResult> {
  const entrypoint = options.manifest.spec.entrypoint.replace(/^(\.\/)+/, "");
  const worker = options.loader.load({
    compatibilityDate: options.compatibilityDate,
    mainModule: WRAPPER_MODULE,
    modules: { ...toModules(options.files), [WRAPPER_MODULE]: { js: wrapperSource(entrypoint) } },
    env: { HOST: options.host },
    globalOutbound: null,
  });
  let response: Response;
  try {
    response = await worker.getEntrypoint().fetch("http://capsule/run", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input: options.input }),
    });
  } catch (error) {
    return {
      ok: false,
      error: { name: "SandboxError", message: `The capsule could not start: ${(error as Error).message}` },
    };
  }
  const text = await response.text();
  try {
    return JSON.parse(text) as SandboxResult;
  } catch {
    return {
      ok: false,
      error: {
        name: "SandboxError",
        message: `The capsule returned an unreadable result (${response.status})`,
      },
    };
  }
}
