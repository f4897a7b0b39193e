import { useState } from "preact/hooks";
import { api, json, signIn } from "../api";
import { describeError, ErrorNote } from "../components/ui";
import { href, navigate } from "../router";

function goNext(query: URLSearchParams): void {
  const next = query.get("next");
  navigate(next?.startsWith("#/") && !next.startsWith("#/signin") ? next : href("/"));
}

export function SignInPage({ query }: { query: URLSearchParams }) {
  const [handle, setHandle] = useState("");
  const [email, setEmail] = useState("");
  const [created, setCreated] = useState<{ handle: string; apiKey: string } | null>(null);
  const [key, setKey] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const signUp = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const result = await json(
        api.v1.accounts.$post({ json: { handle: handle.trim(), email: email.trim() } }),
      );
      setCreated({ handle: result.account.handle, apiKey: result.apiKey });
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  };

  const useKey = async (apiKey: string, event?: Event) => {
    event?.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(apiKey);
      goNext(query);
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  };

  if (created) {
    return (
      <section class="narrow">
        <h1>Your account {created.handle} is ready</h1>
        <p>
          This is your API key. <strong>It is shown only this once</strong>: copy it somewhere safe now. The
          CLI (<code>npx soma login</code>) and runners use it too.
        </p>
        <p>
          <label for="new-key">API key</label>
          <input
            id="new-key"
            class="mono wide"
            readOnly
            value={created.apiKey}
            onFocus={(e) => e.currentTarget.select()}
          />
        </p>
        <p class="row">
          <button type="button" onClick={() => void navigator.clipboard?.writeText(created.apiKey)}>
            Copy the key
          </button>
          <button type="button" class="primary" disabled={busy} onClick={() => void useKey(created.apiKey)}>
            I saved it, continue
          </button>
        </p>
        {error && <ErrorNote message={error} />}
      </section>
    );
  }

  return (
    <section class="narrow">
      <h1>Sign in or sign up</h1>
      {error && <ErrorNote message={error} />}
      <div class="cols">
        <form onSubmit={(e) => void useKey(key, e)} aria-labelledby="signin-title">
          <h2 id="signin-title">Sign in with an API key</h2>
          <p>
            <label for="api-key">API key</label>
            <input
              id="api-key"
              class="mono wide"
              required
              autoComplete="off"
              value={key}
              onInput={(e) => setKey(e.currentTarget.value)}
              placeholder="soma_…"
            />
          </p>
          <p class="hint">The key is exchanged for a short-lived access token and kept only in this tab.</p>
          <button type="submit" class="primary" disabled={busy}>
            Sign in
          </button>
        </form>
        <form onSubmit={(e) => void signUp(e)} aria-labelledby="signup-title">
          <h2 id="signup-title">Create an account</h2>
          <p>
            <label for="handle">Handle</label>
            <input
              id="handle"
              required
              pattern="[a-z0-9](?:[a-z0-9\-]{0,37}[a-z0-9])?"
              title="2 to 39 lowercase letters, digits or inner hyphens"
              value={handle}
              onInput={(e) => setHandle(e.currentTarget.value)}
              aria-describedby="handle-hint"
            />
            <span id="handle-hint" class="hint">
              Your namespace: your capsules are named handle/name.
            </span>
          </p>
          <p>
            <label for="email">Email</label>
            <input
              id="email"
              type="email"
              required
              value={email}
              onInput={(e) => setEmail(e.currentTarget.value)}
            />
          </p>
          <button type="submit" disabled={busy}>
            Sign up
          </button>
        </form>
      </div>
    </section>
  );
}
