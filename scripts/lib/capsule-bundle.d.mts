export function packCapsule(dir: string): Promise<{ name: string; version: string; bytes: Uint8Array }>;
export function firstPartyCapsuleDirs(root: string): Promise<string[]>;
