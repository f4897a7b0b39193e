/**
 * The one audited way values enter ClickHouse SQL. ClickHouse 18.16 has no server-side query parameters, so
 * every value is bound here, client-side: strings become quoted literals with `\` and `'` escaped (the only
 * characters that can end a ClickHouse string literal), numbers must be finite, dates and identifiers must
 * match strict patterns. Anything else is refused before a query is built.
 */

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/;

/** A fragment of SQL that is already safe to splice (built only by this module). */
export class Sql {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export type SqlValue = string | number | bigint | boolean | Date | null | Sql | readonly (string | number)[];

/** Quotes a string as a ClickHouse literal. */
export function quoteString(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

/** A Date as a UTC `DateTime` literal (second precision). */
export function dateTimeLiteral(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new TypeError("invalid date");
  return `toDateTime(${quoteString(date.toISOString().slice(0, 19).replace("T", " "))}, 'UTC')`;
}

/** Renders one value as SQL. */
export function literal(value: SqlValue): string {
  if (value instanceof Sql) return value.text;
  if (value === null) return "NULL";
  if (value instanceof Date) return dateTimeLiteral(value);
  if (typeof value === "boolean") return value ? "1" : "0";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError("non-finite number in SQL");
    return String(value);
  }
  if (Array.isArray(value)) {
    if (value.length === 0) throw new TypeError("empty list in SQL");
    return `(${value.map((v) => literal(v)).join(", ")})`;
  }
  return quoteString(value as string);
}

/** Tagged template: `sql\`SELECT * FROM events WHERE id = ${id}\`` with every interpolation bound as a literal. */
export function sql(strings: TemplateStringsArray, ...values: SqlValue[]): Sql {
  let text = strings[0] ?? "";
  values.forEach((value, i) => {
    text += literal(value) + (strings[i + 1] ?? "");
  });
  return new Sql(text);
}

/** An identifier (table, column, alias) from an allow-listed pattern. */
export function ident(name: string): Sql {
  if (!IDENTIFIER.test(name)) throw new TypeError(`not an identifier: ${name}`);
  return new Sql(name);
}

/** A `Date` literal from YYYY-MM-DD. */
export function dateLiteral(day: string): Sql {
  if (!DATE.test(day)) throw new TypeError(`not a date: ${day}`);
  return new Sql(`toDate(${quoteString(day)})`);
}

/** Formats a Date as the `YYYY-MM-DD hh:mm:ss` text ClickHouse's DateTime reads in JSONEachRow. */
export function dateTimeText(date: Date): string {
  const text = date.toISOString().slice(0, 19).replace("T", " ");
  if (!DATE_TIME.test(text)) throw new TypeError("invalid date");
  return text;
}

export function join(parts: Sql[], separator: string): Sql {
  return new Sql(parts.map((p) => p.text).join(separator));
}
