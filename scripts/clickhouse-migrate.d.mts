export const MIGRATIONS_DIR: string;

export class ClickHouseError extends Error {
  status: number;
  /** ClickHouse's `Code: N`, when the message has one. */
  code: number | undefined;
  constructor(message: string, status: number);
}

export interface ClickHouseConnection {
  url: string;
  user?: string;
  password?: string;
}

export function splitStatements(sql: string): string[];
export function migrationFiles(dir?: string): Promise<{ version: string; file: string; path: string }[]>;
export function execute(connection: ClickHouseConnection, query: string, database?: string): Promise<string>;
export function migrate(
  options: ClickHouseConnection & { database?: string; dir?: string; log?: (message: string) => void },
): Promise<{ applied: string[]; current: string[] }>;
