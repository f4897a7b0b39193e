import { ApiClient } from "../api.ts";
import { integerOption, stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { resolveConnection } from "../config.ts";
import { UsageError } from "../errors.ts";
import { emit, formatTable, truncate } from "../output.ts";

const SORTS = ["popular", "rating", "recent", "name"];

export interface SearchItem {
  name: string;
  latestVersion: string;
  description: string;
  category: string;
  tags: string[];
  installCount: number;
  ratingAvg: number | null;
  ratingCount?: number;
}

/** The search results as a table. */
export function resultsTable(items: SearchItem[]): string {
  return formatTable(
    ["NAME", "VERSION", "CATEGORY", "INSTALLS", "RATING", "DESCRIPTION"],
    items.map((item) => [
      item.name,
      item.latestVersion,
      item.category,
      String(item.installCount),
      item.ratingAvg === null || item.ratingAvg === undefined || item.ratingCount === 0
        ? "-"
        : item.ratingAvg.toFixed(1),
      truncate(item.description ?? "", 60),
    ]),
  );
}

/** `soma search`: searches the marketplace. */
export const searchCommand: Command = {
  name: "search",
  summary: "Search the marketplace",
  help: `Usage: soma search [<query>] [--category C] [--tag T] [--sort popular|rating|recent|name] [--limit N]

Lists published capsules matching the query (GET /v1/capsules).

Options:
  --category <name>   Only this category (Code, Data, Testing, ...)
  --tag <tag>         Only capsules with this tag
  --sort <order>      popular (default), rating, recent or name
  --limit <n>         At most n results
  --cursor <cursor>   Continue from a previous page's nextCursor

${COMMON_HELP}`,
  options: {
    category: { type: "string" },
    tag: { type: "string" },
    sort: { type: "string" },
    limit: { type: "string" },
    cursor: { type: "string" },
  },
  positionals: { min: 0, max: 1 },
  async run({ values, positionals }, { io, env }) {
    const sort = stringOption(values, "sort");
    if (sort !== undefined && !SORTS.includes(sort))
      throw new UsageError(`--sort must be one of ${SORTS.join(", ")}`);
    const limit = integerOption(values, "limit", 1);
    const connection = await resolveConnection(values, env);
    const client = new ApiClient(connection);
    const page = await client.json<{ items: SearchItem[]; nextCursor: string | null }>(
      "GET",
      "/v1/capsules",
      {
        query: {
          q: positionals[0],
          category: stringOption(values, "category"),
          tag: stringOption(values, "tag"),
          sort,
          limit,
          cursor: stringOption(values, "cursor"),
        },
      },
    );
    emit(io, values.json === true, page, () => {
      if (page.items.length === 0) return "No capsules found.";
      const lines = [resultsTable(page.items)];
      if (page.nextCursor) lines.push("", `More results: add --cursor ${page.nextCursor}`);
      return lines;
    });
    return 0;
  },
};
