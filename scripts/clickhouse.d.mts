export const DEFAULT_HTTP_PORT: number;

export interface ClickHousePaths {
  dir: string;
  configFile: string;
  usersFile: string;
  data: string;
  tmp: string;
  userFiles: string;
  formatSchemas: string;
  logs: string;
  serverLog: string;
  errorLog: string;
  consoleLog: string;
  serverFile: string;
}

export interface RunningClickHouse {
  url: string;
  port: number;
  pid: number;
  /** `<stateDir>/clickhouse`: configuration, data and logs. */
  dir: string;
  exited: Promise<{ code: number | null; signal: string | null; error?: Error }>;
  /** SIGTERM, then SIGKILL after a timeout; resolves with whether it is gone. */
  stop(): Promise<boolean>;
}

export function clickHousePaths(stateDir: string): ClickHousePaths;
export function findClickHouseServer(): string | null;
export function ensureClickHouseServer(options?: { log?: (message: string) => void }): Promise<string>;
export function runningClickHouse(stateDir: string): { pid: number; url: string; port: number } | null;
export function pingClickHouse(url: string, timeoutMs?: number): Promise<boolean>;
export function stopClickHouse(pid: number, options?: { timeoutMs?: number }): Promise<boolean>;
export function chooseHttpPort(preferred: number): Promise<{ port: number; replaced: boolean }>;
export function requestedHttpPort(value?: string): number;
export function startClickHouse(options: {
  stateDir: string;
  /** Omitted or 0: a free port. */
  httpPort?: number;
  /** The `default` user's password; none when empty. */
  password?: string;
  log?: (message: string) => void;
  readyTimeoutMs?: number;
  /** Called as soon as the process exists, before it is ready, so an interrupted caller can stop it. */
  onSpawn?: (pid: number, exited: RunningClickHouse["exited"]) => void;
}): Promise<RunningClickHouse>;
