import { type Schema, Validator } from "@cfworker/json-schema";
import { gzipSync } from "fflate";
import { packTar } from "modern-tar";
import { useEffect, useMemo, useState } from "preact/hooks";
import { parseDocument } from "yaml";
import { api, json, raw, type Session } from "../api";
import { describeError, ErrorNote, Loading, useAsync } from "../components/ui";
import type { Submission } from "./publish";

const ENTRYPOINT = `/** Returns the input with a greeting, so a run shows the capsule was reached. */
export default {
  async run(input) {
    return { ...input, greeting: "hello" };
  },
};
`;

function template(handle: string): string {
  return `apiVersion: soma.dev/v1
kind: TaskCapsule
metadata:
  name: ${handle}/hello
  version: 1.0.0
  category: Other
  tags: [example]
  license: MIT
spec:
  description: Says hello, as a first capsule.
  runtime: worker
  entrypoint: main.js
  permissions: []
  dependencies: {}
  tokenEstimate: { planning: 0, execution: 10 }
  inputs: { type: object }
  outputs: { type: object }
  pricing: { model: free, amountUsd: 0 }
`;
}

interface Problem {
  where: string;
  message: string;
}

/** YAML syntax first (with line numbers), then the published JSON Schema, then the caller's namespace. */
function check(
  validator: Validator,
  text: string,
  handle: string,
): { problems: Problem[]; entrypoint: string | null } {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    return {
      problems: doc.errors.map((e) => ({
        where: `line ${e.linePos?.[0]?.line ?? "?"}`,
        message: e.message.split("\n")[0] ?? "",
      })),
      entrypoint: null,
    };
  }
  const value: unknown = doc.toJS();
  const result = validator.validate(value);
  // The validator reports each failure at every enclosing level too; the innermost ones say what to fix.
  const leaves = result.errors.filter(
    (e) => !result.errors.some((o) => o !== e && o.instanceLocation.startsWith(`${e.instanceLocation}/`)),
  );
  const problems = leaves
    .filter((e) => e.keyword !== "properties" && e.keyword !== "allOf")
    .map((e) => ({
      where: e.instanceLocation.replace(/^#\/?/, "").replace(/\//g, ".") || "manifest",
      message: e.error,
    }));
  const meta = (value as { metadata?: { name?: unknown } } | null)?.metadata;
  if (typeof meta?.name === "string" && !meta.name.startsWith(`${handle}/`)) {
    problems.push({ where: "metadata.name", message: `must be in your namespace: ${handle}/<name>` });
  }
  const entrypoint = (value as { spec?: { entrypoint?: unknown } } | null)?.spec?.entrypoint;
  return { problems, entrypoint: typeof entrypoint === "string" ? entrypoint : null };
}

/** Writes capsule.yaml and its entrypoint in the browser, checked as you type, then packs and submits them. */
export function ManifestEditor({
  session,
  onSubmitted,
}: {
  session: Session;
  onSubmitted: (s: Submission) => void;
}) {
  const [schema] = useAsync(() => json(api.v1.schemas["capsule.json"].$get()), []);
  const [manifest, setManifest] = useState(() => template(session.handle));
  const [source, setSource] = useState(ENTRYPOINT);
  const [checked, setChecked] = useState<{ problems: Problem[]; entrypoint: string | null } | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const validator = useMemo(
    () =>
      schema.state === "ready" ? new Validator(schema.data as unknown as Schema, "2020-12", false) : null,
    [schema.state],
  );
  useEffect(() => {
    if (!validator) return;
    const timer = setTimeout(() => setChecked(check(validator, manifest, session.handle)), 200);
    return () => clearTimeout(timer);
  }, [validator, manifest, session.handle]);

  const submit = async () => {
    if (!checked?.entrypoint) return;
    setBusy(true);
    setError(null);
    try {
      const encoder = new TextEncoder();
      const files: [string, string][] = [
        ["capsule.yaml", manifest],
        [checked.entrypoint, source],
      ];
      const tar = await packTar(
        files.map(([name, text]) => {
          const body = encoder.encode(text);
          return { header: { name, type: "file" as const, size: body.length }, body };
        }),
      );
      const response = await raw("/v1/capsules", {
        method: "POST",
        headers: { "content-type": "application/gzip" },
        body: gzipSync(tar),
      });
      onSubmitted(((await response.json()) as { submission: Submission }).submission);
    } catch (e) {
      setError(`The capsule was not accepted: ${describeError(e)}`);
    } finally {
      setBusy(false);
    }
  };

  if (schema.state === "error")
    return <ErrorNote message={`The manifest schema could not be loaded: ${schema.error}`} />;
  if (!validator) return <Loading what="the manifest schema" />;
  const valid = checked !== null && checked.problems.length === 0 && checked.entrypoint !== null;
  return (
    <div class="cols">
      <p>
        <label for="manifest">capsule.yaml</label>
        <textarea
          id="manifest"
          class="mono"
          rows={22}
          spellcheck={false}
          value={manifest}
          onInput={(e) => setManifest(e.currentTarget.value)}
          aria-describedby="manifest-check"
        />
      </p>
      <div>
        <p>
          <label for="entrypoint">{checked?.entrypoint ?? "Entrypoint"}</label>
          <textarea
            id="entrypoint"
            class="mono"
            rows={10}
            spellcheck={false}
            value={source}
            onInput={(e) => setSource(e.currentTarget.value)}
          />
        </p>
        <div id="manifest-check" role="status" aria-live="polite">
          {checked === null ? (
            <p class="status">Checking…</p>
          ) : valid ? (
            <p class="ok">The manifest matches the published schema.</p>
          ) : (
            <>
              <p class="bad">Fix these before submitting:</p>
              <ul class="bad">
                {checked.problems.map((p) => (
                  <li key={`${p.where}-${p.message}`}>
                    <code>{p.where}</code>: {p.message}
                  </li>
                ))}
              </ul>
            </>
          )}
        </div>
        <button type="button" class="primary" disabled={!valid || busy} onClick={() => void submit()}>
          Pack and submit
        </button>
        {error && <ErrorNote message={error} />}
      </div>
    </div>
  );
}
