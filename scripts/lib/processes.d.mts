export function liveGroupMembers(pgid: number): number[];
export function isAlive(pid: number): boolean;
export function stopProcessGroup(pgid: number, graceMs?: number): Promise<boolean>;
export function freePort(): Promise<number>;
export function portInUse(port: number): Promise<boolean>;
export function isAcceptingConnections(port: number): Promise<boolean>;
