import type { InferRequestType } from "hono/client";
import { useState } from "preact/hooks";
import calculator from "../../../examples/projects/python-cli-calculator.json";
import { api, json, type Session } from "../api";
import { describeError, Empty, ErrorNote, formatDate, Show, useAsync } from "../components/ui";
import { href, navigate } from "../router";

type ProjectInput = InferRequestType<typeof api.v1.projects.$post>["json"];

const EXAMPLE = JSON.stringify(calculator, null, 2);

export function ProjectsPage({ session }: { session: Session | null }) {
  const [spec, setSpec] = useState(EXAMPLE);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [projects, reload] = useAsync(
    () => (session ? json(api.v1.projects.$get({ query: { limit: "20" } })) : Promise.resolve({ items: [] })),
    [session?.handle],
  );
  const [reviews] = useAsync(
    () =>
      session
        ? json(api.v1["review-tasks"].$get({ query: { limit: "20" } }))
        : Promise.resolve({ items: [] }),
    [session?.handle],
    10_000,
  );
  if (!session) {
    return (
      <section>
        <h1>KAMACHIQ projects</h1>
        <p>
          <a href={href("/signin", { next: location.hash })}>Sign in</a> to launch autonomous projects.
        </p>
      </section>
    );
  }

  const launch = async (text: string) => {
    setBusy(true);
    setError(null);
    try {
      let body: ProjectInput;
      try {
        body = JSON.parse(text) as ProjectInput;
      } catch (e) {
        throw new Error(`The spec is not valid JSON: ${(e as Error).message}`);
      }
      const { project } = await json(api.v1.projects.$post({ json: body }));
      navigate(href(`/projects/${project.id}`));
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <h1>KAMACHIQ projects</h1>
      <section aria-labelledby="launch-title" class="panel">
        <h2 id="launch-title">Launch a project</h2>
        <p>
          The example builds a Python command-line calculator: a planner splits it into tasks, agents write
          the code in parallel, a runner runs its tests, and a quality gate scores every output. It needs a
          runner for your account:{" "}
          <code>npx soma runner --url {location.origin} --token &lt;your API key&gt;</code>.
        </p>
        <p>
          <button type="button" class="primary" disabled={busy} onClick={() => void launch(EXAMPLE)}>
            Launch the calculator example
          </button>
        </p>
        <details>
          <summary>Or edit a spec</summary>
          <p>
            <label for="spec">Project spec (JSON)</label>
            <textarea
              id="spec"
              class="mono"
              rows={16}
              value={spec}
              onInput={(e) => setSpec(e.currentTarget.value)}
            />
          </p>
          <button type="button" disabled={busy} onClick={() => void launch(spec)}>
            Launch this spec
          </button>
        </details>
        {busy && (
          <p role="status" class="status">
            Planning…
          </p>
        )}
        {error && <ErrorNote message={`The project was not launched: ${error}`} />}
      </section>
      <section aria-labelledby="held-title">
        <h2 id="held-title">Tasks waiting for a human</h2>
        <Show value={reviews} what="tasks held at a gate">
          {(r) =>
            r.items.length === 0 ? (
              <Empty>No task is waiting for your review.</Empty>
            ) : (
              <ul>
                {r.items.map((t) => (
                  <li key={`${t.projectId}-${t.taskId}`}>
                    <a href={href(`/projects/${t.projectId}`)}>
                      {t.taskId} ({t.capsule})
                    </a>{" "}
                    scored {t.score?.toFixed(2) ?? "–"}
                  </li>
                ))}
              </ul>
            )
          }
        </Show>
      </section>
      <section aria-labelledby="mine-title">
        <h2 id="mine-title">My projects</h2>
        <Show value={projects} what="your projects" retry={reload}>
          {(p) =>
            p.items.length === 0 ? (
              <Empty>No projects yet.</Empty>
            ) : (
              <table>
                <caption class="visually-hidden">My projects</caption>
                <thead>
                  <tr>
                    <th scope="col">Project</th>
                    <th scope="col">Status</th>
                    <th scope="col">Started</th>
                  </tr>
                </thead>
                <tbody>
                  {p.items.map((item) => (
                    <tr key={item.id}>
                      <td>
                        <a href={href(`/projects/${item.id}`)}>{item.name}</a>
                      </td>
                      <td>{item.status.replace(/_/g, " ")}</td>
                      <td>{formatDate(item.createdAt)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Show>
      </section>
    </>
  );
}
