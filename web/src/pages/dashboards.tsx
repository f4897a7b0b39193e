import type { ComponentChildren } from "preact";
import { useMemo, useState } from "preact/hooks";
import { api, download, json, type Session } from "../api";
import { Chart, type Series } from "../components/chart";
import {
  describeError,
  Empty,
  ErrorNote,
  formatDate,
  formatNumber,
  formatUsd,
  Scroll,
  Show,
  useAsync,
} from "../components/ui";
import { href, navigate } from "../router";

const REFRESH_MS = 10_000;
const DAY = 86_400_000;

const KINDS = [
  ["platform", "Platform"],
  ["me", "My usage"],
  ["capsule", "My capsule"],
  ["admin", "Admin"],
] as const;

interface Range {
  from: string;
  to: string;
  interval: "hour" | "day";
}

function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** `to` is exclusive in the API, so the chosen last day becomes the next midnight. */
function apiRange(r: Range): { from: string; to: string; interval: "hour" | "day"; format: "json" } {
  return {
    from: `${r.from}T00:00:00Z`,
    to: new Date(Date.parse(`${r.to}T00:00:00Z`) + DAY).toISOString(),
    interval: r.interval,
    format: "json",
  };
}

function seconds(iso: string): number {
  return Date.parse(iso.endsWith("Z") || iso.includes("+") ? iso : `${iso.replace(" ", "T")}Z`) / 1000;
}

function Table<T>({
  caption,
  rows,
  columns,
  empty,
}: {
  caption: string;
  rows: T[];
  columns: [string, (row: T) => ComponentChildren][];
  empty: string;
}) {
  if (rows.length === 0) return <Empty>{empty}</Empty>;
  return (
    <Scroll label={caption}>
      <table>
        <caption>{caption}</caption>
        <thead>
          <tr>
            {columns.map(([name]) => (
              <th key={name} scope="col">
                {name}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, i) => (
            <tr key={i}>
              {columns.map(([name, cell]) => (
                <td key={name}>{cell(row)}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </Scroll>
  );
}

function Totals({ values }: { values: [string, string][] }) {
  return (
    <dl class="facts">
      {values.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

function Platform({ range, refresh }: { range: Range; refresh: number | undefined }) {
  const [data, reload] = useAsync(
    () => json(api.v1.analytics.platform.$get({ query: apiRange(range) })),
    [range],
    refresh,
  );
  return (
    <Show value={data} what="platform figures" retry={reload}>
      {(d) => <PlatformView d={d} />}
    </Show>
  );
}

type PlatformData = Awaited<ReturnType<typeof loadPlatform>>;
const loadPlatform = (range: Range) => json(api.v1.analytics.platform.$get({ query: apiRange(range) }));

function PlatformView({ d }: { d: PlatformData }) {
  const chart = useMemo(() => {
    const times = [
      ...new Set([...d.executions.map((p) => seconds(p.t)), ...d.installs.map((p) => seconds(p.t))]),
    ].sort((a, b) => a - b);
    const exec = new Map(d.executions.map((p) => [seconds(p.t), p.executions]));
    const inst = new Map(d.installs.map((p) => [seconds(p.t), p.installs]));
    const series: Series[] = [
      { label: "Executions", values: times.map((t) => exec.get(t) ?? 0), color: "#0b62c4" },
      { label: "Installs", values: times.map((t) => inst.get(t) ?? 0), color: "#8a3ffc" },
    ];
    return { times, series };
  }, [d]);
  return (
    <>
      <Totals
        values={[
          ["Accounts", formatNumber(d.totals.accounts)],
          ["Active accounts", formatNumber(d.totals.activeAccounts)],
          ["Capsules", formatNumber(d.totals.capsules)],
          ["Installs", formatNumber(d.totals.installs)],
          ["Executions", formatNumber(d.totals.executions)],
          ["Error rate", `${(d.totals.errorRate * 100).toFixed(1)}%`],
          ["Tokens", formatNumber(d.totals.tokens)],
        ]}
      />
      {chart.times.length > 0 ? (
        <Chart
          title="Executions and installs"
          times={chart.times}
          series={chart.series}
          summary={`${d.totals.executions} executions and ${d.totals.installs} installs in the range.`}
        />
      ) : (
        <Empty>No executions or installs in this range yet.</Empty>
      )}
      <Table
        caption="Top capsules by tokens"
        rows={d.topCapsules}
        empty="No capsule ran in this range."
        columns={[
          ["Capsule", (r) => <a href={href(`/capsules/${r.capsule}`)}>{r.capsule}</a>],
          ["Executions", (r) => formatNumber(r.executions)],
          ["Failures", (r) => formatNumber(r.failures)],
          ["Error rate", (r) => `${(r.errorRate * 100).toFixed(1)}%`],
          ["Tokens", (r) => formatNumber(r.totalTokens)],
        ]}
      />
    </>
  );
}

function Mine({ range, refresh }: { range: Range; refresh: number | undefined }) {
  const [data, reload] = useAsync(
    () => json(api.v1.analytics.me.$get({ query: apiRange(range) })),
    [range],
    refresh,
  );
  return (
    <Show value={data} what="your usage" retry={reload}>
      {(d) => {
        // History and forecast share today (a partial day of history, a full day of forecast): one x per day.
        const used = new Map(d.usage.map((p) => [seconds(p.t), p.tokens]));
        const ahead = new Map(d.forecast.daily.map((f) => [seconds(`${f.day}T00:00:00Z`), f]));
        const times = [...new Set([...used.keys(), ...ahead.keys()])].sort((a, b) => a - b);
        const series: Series[] = [
          { label: "Tokens used", values: times.map((t) => used.get(t) ?? null), color: "#0b62c4" },
          {
            label: "Forecast",
            values: times.map((t) => ahead.get(t)?.tokens ?? null),
            color: "#b45309",
            dash: true,
          },
          {
            label: "Forecast high",
            values: times.map((t) => ahead.get(t)?.high ?? null),
            color: "#b45309",
            bandWith: 3,
          },
          { label: "Forecast low", values: times.map((t) => ahead.get(t)?.low ?? null), color: "#b45309" },
        ];
        return (
          <>
            <Totals
              values={[
                ["Tokens", formatNumber(d.totals.tokens)],
                ["Spend", formatUsd(d.totals.spendMicroUsd)],
                ["Events", formatNumber(d.totals.events)],
                ["Forecast, next 30 days", `${formatNumber(d.forecast.totalTokens)} tokens`],
                ["Recommended budget", `${formatNumber(d.forecast.recommendedBudgetTokens)} tokens`],
              ]}
            />
            {times.length > 0 ? (
              <Chart
                title="Tokens per period, then the forecast with its 90% band"
                times={times}
                series={series}
                summary={`${d.totals.tokens} tokens used; ${d.forecast.totalTokens} forecast for the next 30 days.`}
              />
            ) : (
              <Empty>No usage recorded yet: run a project to see it here.</Empty>
            )}
            <Table
              caption="Usage by capsule"
              rows={d.byCapsule}
              empty="No capsule ran for you in this range."
              columns={[
                ["Capsule", (r) => r.key || "(none)"],
                ["Runs", (r) => formatNumber(r.events)],
                ["Tokens", (r) => formatNumber(r.totalTokens)],
                ["Spend", (r) => formatUsd(r.amountMicroUsd)],
              ]}
            />
          </>
        );
      }}
    </Show>
  );
}

function CapsuleStats({
  range,
  refresh,
  capsule,
}: {
  range: Range;
  refresh: number | undefined;
  capsule: string;
}) {
  const [ns = "", name = ""] = capsule.split("/");
  const [data, reload] = useAsync(
    () =>
      json(api.v1.analytics.capsules[":ns"][":name"].$get({ param: { ns, name }, query: apiRange(range) })),
    [range, capsule],
    refresh,
  );
  if (!capsule) return <Empty>Pick one of your capsules above.</Empty>;
  return (
    <Show value={data} what={`figures for ${capsule}`} retry={reload}>
      {(d) => (
        <>
          <Totals
            values={[
              ["Executions", formatNumber(d.totals.executions)],
              [
                "Success rate",
                d.totals.successRate === null ? "–" : `${(d.totals.successRate * 100).toFixed(1)}%`,
              ],
              ["Average tokens", formatNumber(d.totals.averageTokens)],
              ["Installs", formatNumber(d.totals.installs)],
            ]}
          />
          {d.executions.length > 0 ? (
            <Chart
              title="Executions"
              times={d.executions.map((p) => seconds(p.t))}
              series={[
                { label: "Executions", values: d.executions.map((p) => p.executions), color: "#0b62c4" },
              ]}
              summary={`${d.totals.executions} executions in the range.`}
            />
          ) : (
            <Empty>{capsule} has not run in this range.</Empty>
          )}
          <Table
            caption="Executions by period"
            rows={d.executions}
            empty="No executions."
            columns={[
              ["Period", (r) => formatDate(r.t)],
              ["Executions", (r) => formatNumber(r.executions)],
              [
                "Success rate",
                (r) => (r.successRate === null ? "–" : `${(r.successRate * 100).toFixed(0)}%`),
              ],
              ["Average tokens", (r) => formatNumber(r.averageTokens)],
            ]}
          />
        </>
      )}
    </Show>
  );
}

function Admin({ range, refresh }: { range: Range; refresh: number | undefined }) {
  const [data, reload] = useAsync(
    () => json(api.v1.analytics.admin.$get({ query: apiRange(range) })),
    [range],
    refresh,
  );
  return (
    <Show value={data} what="admin figures" retry={reload}>
      {(d) => (
        <>
          <Table
            caption="Usage and revenue per tenant"
            rows={d.tenants}
            empty="No tenant used the platform in this range."
            columns={[
              ["Account", (r) => r.handle ?? r.accountId],
              ["Events", (r) => formatNumber(r.events)],
              ["Tokens", (r) => formatNumber(r.totalTokens)],
              ["Revenue", (r) => formatUsd(r.revenueMicroUsd)],
            ]}
          />
          <Table
            caption="Security events"
            rows={d.securityEvents}
            empty="No security events in this range."
            columns={[
              ["Time", (r) => formatDate(String((r as { time?: string }).time ?? ""))],
              ["Type", (r) => String((r as { type?: string }).type ?? "")],
              ["Subject", (r) => String((r as { subject?: string }).subject ?? "")],
            ]}
          />
        </>
      )}
    </Show>
  );
}

/** The caller's published capsules (from their submissions), one link each, so authors need not type names. */
function MyPublished({ current, link }: { current: string; link: (name: string) => string }) {
  const [mine] = useAsync(() => json(api.v1.submissions.$get({ query: { limit: "200" } })), []);
  if (mine.state !== "ready") return null;
  const names = [
    ...new Set(mine.data.items.filter((s) => s.status === "published").map((s) => s.name)),
  ].sort();
  if (names.length === 0) return null;
  return (
    <ul class="chips" aria-label="Your capsules">
      {names.map((name) => (
        <li key={name}>
          <a href={link(name)} aria-current={name === current ? "page" : undefined}>
            {name}
          </a>
        </li>
      ))}
    </ul>
  );
}

const CSV_PATHS: Record<string, (capsule: string) => string> = {
  platform: () => "/v1/analytics/platform",
  me: () => "/v1/analytics/me",
  capsule: (c) => `/v1/analytics/capsules/${c}`,
  admin: () => "/v1/analytics/admin",
};

export function DashboardsPage({
  kind,
  query,
  session,
}: {
  kind: string;
  query: URLSearchParams;
  session: Session | null;
}) {
  const now = Date.now();
  const range: Range = useMemo(
    () => ({
      from: query.get("from") ?? isoDay(now - 29 * DAY),
      to: query.get("to") ?? isoDay(now),
      interval: query.get("interval") === "hour" ? "hour" : "day",
    }),
    [query.toString()],
  );
  const capsule = query.get("capsule") ?? "";
  const auto = query.get("auto") !== "off";
  const [csvError, setCsvError] = useState<string | null>(null);
  const [capsuleText, setCapsuleText] = useState(capsule);
  if (!session) {
    return (
      <section>
        <h1>Dashboards</h1>
        <p>
          <a href={href("/signin", { next: location.hash })}>Sign in</a> to see the dashboards.
        </p>
      </section>
    );
  }
  const set = (changes: Record<string, string>) =>
    navigate(
      href(`/dashboards/${kind}`, {
        from: range.from,
        to: range.to,
        interval: range.interval,
        capsule,
        auto: auto ? "" : "off",
        ...changes,
      }),
      true,
    );
  const refresh = auto ? REFRESH_MS : undefined;
  const exportCsv = () => {
    const r = apiRange(range);
    const params = new URLSearchParams({ from: r.from, to: r.to, interval: r.interval, format: "csv" });
    download(
      `${CSV_PATHS[kind]?.(capsule) ?? "/v1/analytics/platform"}?${params}`,
      `${kind}-${range.from}-${range.to}.csv`,
    ).catch((e: unknown) => setCsvError(describeError(e)));
  };
  const isAdmin = session.roles.includes("admin");
  return (
    <>
      <h1>Dashboards</h1>
      <nav aria-label="Dashboards" class="tabs">
        {KINDS.filter(([k]) => k !== "admin" || isAdmin).map(([k, label]) => (
          <a
            key={k}
            href={href(`/dashboards/${k}`, {
              from: query.get("from") ?? "",
              to: query.get("to") ?? "",
              capsule,
            })}
            aria-current={k === kind ? "page" : undefined}
          >
            {label}
          </a>
        ))}
      </nav>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <p>
          <label for="from">From</label>
          <input
            id="from"
            type="date"
            value={range.from}
            max={range.to}
            onChange={(e) => set({ from: e.currentTarget.value })}
          />
        </p>
        <p>
          <label for="to">To</label>
          <input
            id="to"
            type="date"
            value={range.to}
            min={range.from}
            onChange={(e) => set({ to: e.currentTarget.value })}
          />
        </p>
        <p>
          <label for="interval">Per</label>
          <select
            id="interval"
            value={range.interval}
            onChange={(e) => set({ interval: e.currentTarget.value })}
          >
            <option value="day">day</option>
            <option value="hour">hour</option>
          </select>
        </p>
        <p class="check">
          <input
            id="auto"
            type="checkbox"
            checked={auto}
            onChange={(e) => set({ auto: e.currentTarget.checked ? "" : "off" })}
          />
          <label for="auto">Refresh every 10 s</label>
        </p>
        <p>
          <button type="button" onClick={exportCsv}>
            Export CSV
          </button>
        </p>
      </form>
      {csvError && <ErrorNote message={`The export failed: ${csvError}`} />}
      {kind === "capsule" && (
        <form
          class="row"
          onSubmit={(e) => {
            e.preventDefault();
            set({ capsule: capsuleText.trim() });
          }}
        >
          <label for="capsule-name">Capsule</label>
          <input
            id="capsule-name"
            placeholder="handle/name"
            value={capsuleText}
            onInput={(e) => setCapsuleText(e.currentTarget.value)}
          />
          <button type="submit">Show</button>
          <MyPublished
            current={capsule}
            link={(name) =>
              href(`/dashboards/capsule`, {
                from: query.get("from") ?? "",
                to: query.get("to") ?? "",
                capsule: name,
              })
            }
          />
        </form>
      )}
      {kind === "platform" && <Platform range={range} refresh={refresh} />}
      {kind === "me" && <Mine range={range} refresh={refresh} />}
      {kind === "capsule" && <CapsuleStats range={range} refresh={refresh} capsule={capsule} />}
      {kind === "admin" &&
        (isAdmin ? (
          <Admin range={range} refresh={refresh} />
        ) : (
          <ErrorNote message="The admin dashboard is for admins." />
        ))}
    </>
  );
}
