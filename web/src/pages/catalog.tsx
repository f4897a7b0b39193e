import type { InferResponseType } from "hono/client";
import { useEffect, useState } from "preact/hooks";
import { api, json } from "../api";
import { Empty, formatNumber, Show, Stars, useAsync } from "../components/ui";
import { href, navigate } from "../router";
import { CATEGORIES } from "../words";

export type CatalogItem = InferResponseType<typeof api.v1.capsules.$get, 200>["items"][number];

const SORTS = [
  ["relevance", "Best match"],
  ["popular", "Most installed"],
  ["rating", "Best rated"],
  ["recent", "Recently updated"],
  ["name", "Name"],
] as const;
type Sort = (typeof SORTS)[number][0];
type Category = (typeof CATEGORIES)[number];

function capsuleHref(name: string): string {
  return href(`/capsules/${name}`);
}

function Verified({ publisher }: { publisher: CatalogItem["publisher"] }) {
  return publisher.verified ? (
    <span class="badge ok" title={`${publisher.handle} is a publisher verified by the platform's admins`}>
      Verified publisher
    </span>
  ) : null;
}

export function CapsuleCard({ item }: { item: CatalogItem }) {
  return (
    <li class="card">
      <h3>
        <a href={capsuleHref(item.name)}>{item.name}</a>
      </h3>
      <p class="dim small">
        v{item.latestVersion} · {item.category} · {item.runtime} <Verified publisher={item.publisher} />
      </p>
      <p class="desc">{item.description}</p>
      <p class="small">
        {item.ratingCount > 0 ? <Stars value={item.ratingAvg} /> : <span class="dim">No ratings yet</span>} ·{" "}
        {formatNumber(item.installCount)} installs · {formatNumber(item.executionCount)} runs ·{" "}
        {item.pricingModel === "free" ? "Free" : "Paid"}
      </p>
      {item.tags.length > 0 && (
        <ul class="tags" aria-label="Tags">
          {item.tags.map((t) => (
            <li key={t}>
              <a href={href("/", { tag: t })}>{t}</a>
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}

function Row({ title, items }: { title: string; items: CatalogItem[] }) {
  if (items.length === 0) return null;
  const id = `row-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return (
    <section aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      <ul class="grid row-scroll">
        {items.map((item) => (
          <CapsuleCard key={item.name} item={item} />
        ))}
      </ul>
    </section>
  );
}

function Discovery() {
  const [featured] = useAsync(() => json(api.v1.featured.$get()), []);
  const [trending] = useAsync(() => json(api.v1.trending.$get({ query: { limit: "8" } })), []);
  const [collections] = useAsync(() => json(api.v1.collections.$get({ query: { limit: "12" } })), []);
  return (
    <>
      {featured.state === "ready" && (
        <Row title="Featured" items={featured.data.items.map((f) => f.capsule)} />
      )}
      {trending.state === "ready" && (
        <Row title="Trending this week" items={trending.data.items.map((t) => t.capsule)} />
      )}
      {collections.state === "ready" && collections.data.items.length > 0 && (
        <section aria-labelledby="collections-title">
          <h2 id="collections-title">Collections</h2>
          <ul class="chips">
            {collections.data.items.map((c) => (
              <li key={c.id}>
                <a href={href(`/collections/${c.id}`)}>
                  {c.title} <span class="dim">({c.itemCount})</span>
                </a>
              </li>
            ))}
          </ul>
        </section>
      )}
    </>
  );
}

function useDebounced<T>(value: T, ms: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return debounced;
}

export function CatalogPage({ query }: { query: URLSearchParams }) {
  const [text, setText] = useState(query.get("q") ?? "");
  const q = useDebounced(text.trim(), 150);
  const category = (query.get("category") ?? "") as Category | "";
  const tag = query.get("tag") ?? "";
  const pricing = (query.get("pricing") ?? "") as "free" | "paid" | "";
  const sort = (query.get("sort") ?? "") as Sort | "";
  const verified = query.get("verified") === "1";
  const view = query.get("view") === "list" ? "list" : "grid";
  const [more, setMore] = useState<CatalogItem[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);

  const params = { q, category, tag, pricing, sort, verified: verified ? "1" : "", view };
  const update = (changes: Partial<typeof params>) =>
    navigate(
      href("/", { ...params, ...changes, view: (changes.view ?? view) === "list" ? "list" : "" }),
      true,
    );

  useEffect(() => {
    if (q !== (query.get("q") ?? "")) update({ q });
  }, [q]);

  const [results, reload] = useAsync(async () => {
    setMore([]);
    const body = await json(
      api.v1.capsules.$get({
        query: {
          ...(q ? { q } : {}),
          ...(category ? { category } : {}),
          ...(tag ? { tag } : {}),
          ...(pricing ? { pricing } : {}),
          ...(verified ? { verified: true } : {}),
          ...(sort ? { sort } : {}),
          limit: "24",
        },
      }),
    );
    setCursor(body.nextCursor);
    return body.items;
  }, [q, category, tag, pricing, verified, sort]);

  const loadMore = async () => {
    if (!cursor) return;
    const body = await json(
      api.v1.capsules.$get({
        query: {
          ...(q ? { q } : {}),
          ...(category ? { category } : {}),
          ...(tag ? { tag } : {}),
          ...(pricing ? { pricing } : {}),
          ...(verified ? { verified: true } : {}),
          ...(sort ? { sort } : {}),
          limit: "24",
          cursor,
        },
      }),
    );
    setMore((m) => [...m, ...body.items]);
    setCursor(body.nextCursor);
  };

  const browsing = !q && !category && !tag && !pricing && !verified;
  return (
    <>
      <h1>Task Capsules</h1>
      <form class="filters" aria-label="Search and filter capsules" onSubmit={(e) => e.preventDefault()}>
        <p class="grow">
          <label for="search">Search capsules</label>
          <input
            id="search"
            type="search"
            value={text}
            autoComplete="off"
            placeholder="Try “csv”, “python”, even “pyhton”"
            onInput={(e) => setText(e.currentTarget.value)}
          />
        </p>
        <p>
          <label for="category">Category</label>
          <select
            id="category"
            value={category}
            onChange={(e) => update({ category: e.currentTarget.value as Category })}
          >
            <option value="">Any</option>
            {CATEGORIES.map((c) => (
              <option key={c}>{c}</option>
            ))}
          </select>
        </p>
        <p>
          <label for="tag">Tag</label>
          <input
            id="tag"
            value={tag}
            size={10}
            onChange={(e) => update({ tag: e.currentTarget.value.trim() })}
          />
        </p>
        <p>
          <label for="pricing">Price</label>
          <select
            id="pricing"
            value={pricing}
            onChange={(e) => update({ pricing: e.currentTarget.value as "free" | "paid" })}
          >
            <option value="">Any</option>
            <option value="free">Free</option>
            <option value="paid">Paid</option>
          </select>
        </p>
        <p>
          <label for="sort">Sort by</label>
          <select id="sort" value={sort} onChange={(e) => update({ sort: e.currentTarget.value as Sort })}>
            <option value="">{q ? "Best match" : "Most installed"}</option>
            {SORTS.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </p>
        <p class="check">
          <input
            id="verified"
            type="checkbox"
            checked={verified}
            onChange={(e) => update({ verified: e.currentTarget.checked ? "1" : "" })}
          />
          <label for="verified">Verified publishers only</label>
        </p>
        <fieldset class="toggle">
          <legend>View</legend>
          <button type="button" aria-pressed={view === "grid"} onClick={() => update({ view: "grid" })}>
            Grid
          </button>
          <button type="button" aria-pressed={view === "list"} onClick={() => update({ view: "list" })}>
            List
          </button>
        </fieldset>
      </form>
      {browsing && <Discovery />}
      <section aria-labelledby="results-title">
        <h2 id="results-title">{browsing ? "All capsules" : "Results"}</h2>
        <Show value={results} what="capsules" retry={reload}>
          {(items) => {
            const all = [...items, ...more];
            return (
              <>
                <p class="status" role="status" aria-live="polite">
                  {results.state === "loading" ? "Searching…" : `${all.length}${cursor ? "+" : ""} capsules`}
                </p>
                {all.length === 0 ? (
                  <Empty>
                    No capsule matches{q ? ` “${q}”` : " these filters"}. Check the spelling or clear a
                    filter.
                  </Empty>
                ) : (
                  <ul class={view === "list" ? "list" : "grid"} id="results">
                    {all.map((item) => (
                      <CapsuleCard key={item.name} item={item} />
                    ))}
                  </ul>
                )}
                {cursor && (
                  <button type="button" onClick={() => void loadMore()}>
                    Show more
                  </button>
                )}
              </>
            );
          }}
        </Show>
      </section>
    </>
  );
}

export function CollectionPage({ id }: { id: string }) {
  const [collection, reload] = useAsync(() => json(api.v1.collections[":id"].$get({ param: { id } })), [id]);
  return (
    <Show value={collection} what="the collection" retry={reload}>
      {({ collection: c }) => (
        <>
          <p>
            <a href={href("/")}>← Catalog</a>
          </p>
          <h1>{c.title}</h1>
          <p>{c.description}</p>
          <p class="dim small">
            {c.curated ? "Curated by the platform" : `By ${c.owner?.handle ?? "someone"}`} · {c.itemCount}{" "}
            capsules
          </p>
          {c.items.length === 0 ? (
            <Empty>This collection is empty.</Empty>
          ) : (
            <ul class="grid">
              {c.items.map((i) => (
                <CapsuleCard key={i.capsule.name} item={i.capsule} />
              ))}
            </ul>
          )}
        </>
      )}
    </Show>
  );
}
