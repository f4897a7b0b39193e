import type { BundleLimits } from "../domain/bundle";

/** Bundle limits from configuration (vars), with safe fallbacks. */
export function bundleLimits(env: {
  MAX_BUNDLE_BYTES: string;
  MAX_UNPACKED_BYTES: string;
  MAX_BUNDLE_ENTRIES: string;
}): BundleLimits {
  return {
    maxCompressedBytes: Number(env.MAX_BUNDLE_BYTES) || 5 * 1024 * 1024,
    maxUnpackedBytes: Number(env.MAX_UNPACKED_BYTES) || 50 * 1024 * 1024,
    maxEntries: Number(env.MAX_BUNDLE_ENTRIES) || 2000,
  };
}
