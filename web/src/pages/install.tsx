import type { InferResponseType } from "hono/client";
import { useState } from "preact/hooks";
import { ApiError, api, json, type Session } from "../api";
import { Dialog, describeError, ErrorNote, Loading, useAsync } from "../components/ui";
import { href, navigate } from "../router";
import { permissionInWords, plural, pricingInWords } from "../words";
import { type ManifestView, manifestView, splitName } from "./capsule";

type Installed = InferResponseType<typeof api.v1.installs.$post, 201>;
type Price = { capsule: string; model: "free" | "per_execution" | "per_1k_tokens"; amountUsd: number };

interface PlannedPackage {
  name: string;
  range: string;
  permissions: string[];
  dependencies: [string, string][];
}

/** Walks the dependency ranges through each capsule's latest manifest to show what will be asked for. */
async function planTree(root: string, manifest: ManifestView): Promise<PlannedPackage[]> {
  const seen = new Map<string, PlannedPackage>();
  const visit = async (name: string, range: string, m: ManifestView) => {
    if (seen.has(name)) return;
    const deps = Object.entries(m.spec?.dependencies ?? {});
    seen.set(name, { name, range, permissions: m.spec?.permissions ?? [], dependencies: deps });
    for (const [dep, depRange] of deps) {
      const detail = await json(api.v1.capsules[":ns"][":name"].$get({ param: splitName(dep) }));
      await visit(dep, depRange, manifestView(detail.manifest));
    }
  };
  await visit(root, "*", manifest);
  return [...seen.values()];
}

function LockTree({ lock, root }: { lock: Installed["lock"]; root: string }) {
  const byName = new Map(lock.packages.map((p) => [p.name, p]));
  const render = (name: string, trail: Set<string>) => {
    const p = byName.get(name);
    if (!p) return <li key={name}>{name} (not in the lock)</li>;
    const children = Object.keys(p.dependencies).filter((d) => !trail.has(d));
    return (
      <li key={name}>
        <span class="mono">
          {p.name}@{p.version}
        </span>{" "}
        <span class="dim small">
          sha256 {p.sha256.slice(0, 12)}… signed by {p.keyid}
        </span>
        {children.length > 0 && <ul>{children.map((c) => render(c, new Set([...trail, c])))}</ul>}
      </li>
    );
  };
  return <ul class="tree">{render(root, new Set([root]))}</ul>;
}

export function InstallDialog({
  capsule,
  manifest,
  session,
  price,
}: {
  capsule: string;
  manifest: ManifestView;
  session: Session | null;
  price: { model: Price["model"]; amountUsd: number } | null;
}) {
  const close = () => navigate(href(`/capsules/${capsule}`), true);
  const [step, setStep] = useState<"permissions" | "budget" | "installing" | "done" | "failed">(
    "permissions",
  );
  const [accepted, setAccepted] = useState<Set<string>>(new Set());
  const [budget, setBudget] = useState("");
  const [prices, setPrices] = useState<Price[]>(
    price && price.model !== "free" ? [{ capsule, model: price.model, amountUsd: price.amountUsd }] : [],
  );
  const [pendingPrices, setPendingPrices] = useState<Price[] | null>(null);
  const [result, setResult] = useState<Installed | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [tree] = useAsync(() => planTree(capsule, manifest), [capsule]);

  const required = tree.state === "ready" ? [...new Set(tree.data.flatMap((p) => p.permissions))].sort() : [];

  const install = async (withPrices: Price[]) => {
    setStep("installing");
    setFailure(null);
    try {
      const budgetTokens = budget.trim() ? Number(budget) : undefined;
      const body = await json(
        api.v1.installs.$post({
          json: {
            capsule,
            range: "*",
            acceptPermissions: [...accepted],
            ...(withPrices.length ? { acceptPrices: withPrices } : {}),
            ...(budgetTokens !== undefined && Number.isFinite(budgetTokens) ? { budgetTokens } : {}),
          },
        }),
      );
      setResult(body);
      setStep("done");
    } catch (e) {
      if (e instanceof ApiError && e.code === "PRICE_NOT_ACCEPTED") {
        setPendingPrices((e.details as { prices?: Price[] } | undefined)?.prices ?? []);
      }
      setFailure(
        e instanceof ApiError && e.code === "PERMISSIONS_NOT_ACCEPTED"
          ? `${e.message}. Approve them in the first step to go on.`
          : describeError(e),
      );
      setStep("failed");
    }
  };

  return (
    <Dialog title={`Install ${capsule}`} open onClose={close}>
      {!session ? (
        <p>
          <a href={href("/signin", { next: href(`/capsules/${capsule}`, { install: "1" }) })}>Sign in</a> to
          install capsules.
        </p>
      ) : (
        <>
          <ol class="steps" aria-label="Install steps">
            {(["permissions", "budget", "installing"] as const).map((s, i) => (
              <li key={s} aria-current={step === s ? "step" : undefined}>
                {i + 1}.{" "}
                {s === "permissions" ? "Approve permissions" : s === "budget" ? "Set a budget" : "Install"}
              </li>
            ))}
          </ol>
          {step === "permissions" &&
            (tree.state === "error" ? (
              <ErrorNote message={tree.error} />
            ) : tree.state !== "ready" ? (
              <Loading what="the dependency tree" />
            ) : (
              <form
                onSubmit={(e) => {
                  e.preventDefault();
                  setStep("budget");
                }}
              >
                <p>
                  {capsule} and its {plural(tree.data.length - 1, "dependency", "dependencies")} will be
                  installed. Each permission below is enforced when they run; approve every one to continue.
                </p>
                <ul class="plain">
                  {tree.data.map((p) => (
                    <li key={p.name}>
                      <strong>{p.name}</strong> <code class="small">{p.range}</code>
                      {p.permissions.length === 0 && <span class="dim small"> needs no permissions</span>}
                    </li>
                  ))}
                </ul>
                {required.length === 0 ? (
                  <p>No permissions are needed.</p>
                ) : (
                  <fieldset>
                    <legend>Permissions asked for</legend>
                    {required.map((p) => (
                      <p class="check" key={p}>
                        <input
                          type="checkbox"
                          id={`perm-${p}`}
                          checked={accepted.has(p)}
                          onChange={(e) => {
                            const next = new Set(accepted);
                            if (e.currentTarget.checked) next.add(p);
                            else next.delete(p);
                            setAccepted(next);
                          }}
                        />
                        <label for={`perm-${p}`}>
                          {permissionInWords(p)} <code class="small">{p}</code> (asked by{" "}
                          {tree.data
                            .filter((t) => t.permissions.includes(p))
                            .map((t) => t.name)
                            .join(", ")}
                          )
                        </label>
                      </p>
                    ))}
                  </fieldset>
                )}
                <p class="row">
                  <button type="submit" class="primary" disabled={required.some((p) => !accepted.has(p))}>
                    Approve and continue
                  </button>
                  <button type="button" onClick={close}>
                    Cancel
                  </button>
                </p>
              </form>
            ))}
          {step === "budget" && (
            <form
              onSubmit={(e) => {
                e.preventDefault();
                void install(prices);
              }}
            >
              <p>
                <label for="budget">Token budget for this install (optional)</label>
                <input
                  id="budget"
                  type="number"
                  min={0}
                  step={1000}
                  value={budget}
                  onInput={(e) => setBudget(e.currentTarget.value)}
                  aria-describedby="budget-hint"
                />
                <span id="budget-hint" class="hint">
                  Runs of this capsule stop once they have used this many tokens. Leave empty for no limit
                  beyond your account's.
                </span>
              </p>
              {prices.length > 0 && (
                <p>
                  You accept the price in force:{" "}
                  {prices.map((p) => `${p.capsule} ${pricingInWords(p.model, p.amountUsd)}`).join(", ")}.
                </p>
              )}
              <p class="row">
                <button type="submit" class="primary">
                  Install
                </button>
                <button type="button" onClick={() => setStep("permissions")}>
                  Back
                </button>
              </p>
            </form>
          )}
          {step === "installing" && (
            <Loading what="the install: resolving versions and checking signatures" />
          )}
          {step === "failed" && (
            <div>
              <ErrorNote message={`The install failed: ${failure ?? "unknown error"}`} />
              {pendingPrices && pendingPrices.length > 0 && (
                <p>
                  <button
                    type="button"
                    onClick={() => {
                      const all = [...prices, ...pendingPrices];
                      setPrices(all);
                      setPendingPrices(null);
                      void install(all);
                    }}
                  >
                    Accept{" "}
                    {pendingPrices
                      .map((p) => `${p.capsule} at ${pricingInWords(p.model, p.amountUsd)}`)
                      .join(", ")}{" "}
                    and retry
                  </button>
                </p>
              )}
              <p class="row">
                <button type="button" onClick={() => setStep("permissions")}>
                  Start again
                </button>
                <button type="button" onClick={close}>
                  Close
                </button>
              </p>
            </div>
          )}
          {step === "done" && result && (
            <div role="status">
              <p class="ok">
                Installed {result.install.capsule}@{result.install.version} with{" "}
                {plural(result.lock.packages.length - 1, "dependency", "dependencies")}. Every bundle's
                signature was checked.
              </p>
              {result.warnings.length > 0 && (
                <ul class="warn">
                  {result.warnings.map((w) => (
                    <li key={w}>{w}</li>
                  ))}
                </ul>
              )}
              <h3>Resolved dependency tree</h3>
              <LockTree lock={result.lock} root={result.install.capsule} />
              <button type="button" class="primary" onClick={close}>
                Done
              </button>
            </div>
          )}
        </>
      )}
    </Dialog>
  );
}
