import { describe, expect, it } from "vitest";
import {
  dateLiteral,
  dateTimeText,
  ident,
  literal,
  quoteString,
  sql,
} from "../../workers/shared/analytics/sql";

const INJECTIONS = [
  "'; DROP TABLE events; --",
  "\\'; DROP TABLE events; --",
  "a\\",
  "a\\\\' OR 1=1 --",
  "' UNION ALL SELECT * FROM system.users --",
  "x' FORMAT JSONEachRow SETTINGS max_threads=1 --",
  "é\u0000\n\r\t'\"`",
];

/** Reads a ClickHouse string literal back the way the server's lexer does (escapes \\ and \\'). */
function unquote(literalText: string): string {
  expect(literalText.startsWith("'") && literalText.endsWith("'")).toBe(true);
  const body = literalText.slice(1, -1);
  let out = "";
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch === "\\") {
      out += body[i + 1];
      i++;
      continue;
    }
    // An unescaped quote inside the body would end the literal early: that is an injection.
    expect(ch).not.toBe("'");
    out += ch;
  }
  return out;
}

describe("ClickHouse value binding", () => {
  it.each(INJECTIONS)("keeps %j inside one string literal", (value) => {
    const quoted = quoteString(value);
    expect(unquote(quoted)).toBe(value);
    const query = sql`SELECT count() FROM events WHERE account_id = ${value}`;
    expect(query.text).toBe(`SELECT count() FROM events WHERE account_id = ${quoted}`);
  });

  it("binds lists, numbers, booleans, dates and nulls", () => {
    expect(literal(["a'b", "c"])).toBe("('a\\'b', 'c')");
    expect(literal(42)).toBe("42");
    expect(literal(true)).toBe("1");
    expect(literal(null)).toBe("NULL");
    expect(literal(new Date("2026-11-01T10:20:30.456Z"))).toBe("toDateTime('2026-11-01 10:20:30', 'UTC')");
    expect(dateTimeText(new Date("2026-01-02T03:04:05Z"))).toBe("2026-01-02 03:04:05");
  });

  it("refuses values that cannot be bound safely", () => {
    expect(() => literal(Number.NaN)).toThrow();
    expect(() => literal(Number.POSITIVE_INFINITY)).toThrow();
    expect(() => literal([])).toThrow();
    expect(() => literal(new Date("nope"))).toThrow();
    expect(() => ident("events; DROP TABLE x")).toThrow();
    expect(() => ident("1abc")).toThrow();
    expect(() => dateLiteral("2026-01-01' OR '1")).toThrow();
    expect(ident("usage_hourly").text).toBe("usage_hourly");
  });

  it("nests fragments without re-quoting them", () => {
    const inner = sql`account_id = ${"x"}`;
    expect(sql`SELECT 1 WHERE ${inner} AND type IN ${["a", "b"]}`.text).toBe(
      "SELECT 1 WHERE account_id = 'x' AND type IN ('a', 'b')",
    );
  });
});
