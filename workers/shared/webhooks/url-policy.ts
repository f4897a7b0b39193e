/**
 * Which URLs the platform may call on a user's behalf (webhook deliveries, GitHub release assets). Production
 * allows only https to public hosts; local development also allows exactly 127.0.0.1, localhost and [::1], so a
 * receiver on the developer's machine works. Private, link-local and reserved addresses and credentials in the
 * URL are always refused. Names are not resolved here (Workers cannot), so a public name pointing at a private
 * address is stopped by the Workers runtime, which never connects to private addresses in production.
 */

export interface UrlPolicyEnv {
  ENVIRONMENT: string;
}

export type UrlVerdict = { ok: true; url: URL } | { ok: false; reason: string };

export const MAX_URL_LENGTH = 2048;

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);
const PRIVATE_SUFFIXES = [".localhost", ".local", ".internal", ".home.arpa", ".lan", ".intranet"];

// [first address as a 32-bit number, prefix length]
const RESERVED_V4: readonly [number, number][] = [
  [v4("0.0.0.0"), 8],
  [v4("10.0.0.0"), 8],
  [v4("100.64.0.0"), 10],
  [v4("127.0.0.0"), 8],
  [v4("169.254.0.0"), 16],
  [v4("172.16.0.0"), 12],
  [v4("192.0.0.0"), 24],
  [v4("192.0.2.0"), 24],
  [v4("192.168.0.0"), 16],
  [v4("198.18.0.0"), 15],
  [v4("198.51.100.0"), 24],
  [v4("203.0.113.0"), 24],
  [v4("224.0.0.0"), 3],
];

function v4(address: string): number {
  return address.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

function isReservedV4(address: string): boolean {
  const n = v4(address);
  return RESERVED_V4.some(
    ([base, bits]) => Math.floor(n / 2 ** (32 - bits)) === Math.floor(base / 2 ** (32 - bits)),
  );
}

/** The eight 16-bit groups of a canonical IPv6 literal (WHATWG URL serialises them in hex, `::` compressed). */
function v6Groups(literal: string): number[] | null {
  const [head = "", tail] = literal.split("::");
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((g) => Number.parseInt(g, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const groups =
    tail === undefined
      ? left
      : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff)
    ? groups
    : null;
}

function isReservedV6(literal: string): boolean {
  const groups = v6Groups(literal);
  if (!groups) return true;
  const [first = 0] = groups;
  // ::/80 covers the unspecified and loopback addresses and every IPv4-mapped or -compatible form.
  if (groups.slice(0, 5).every((g) => g === 0)) return true;
  if ((first & 0xfe00) === 0xfc00) return true; // unique local fc00::/7
  if ((first & 0xffc0) === 0xfe80) return true; // link-local fe80::/10
  if ((first & 0xff00) === 0xff00) return true; // multicast ff00::/8
  if (first === 0x2001 && groups[1] === 0x0db8) return true; // documentation 2001:db8::/32
  if (first === 0x0064 && groups[1] === 0xff9b) return true; // NAT64 64:ff9b::/96 reaches IPv4 space
  return false;
}

/** True in local development (`ENVIRONMENT = "development"`), where loopback receivers are allowed. */
export function isDevelopment(env: UrlPolicyEnv): boolean {
  return env.ENVIRONMENT === "development";
}

/** Checks a URL the platform is asked to call; the reason names what is wrong, for the error message. */
export function checkOutboundUrl(raw: string, env: UrlPolicyEnv): UrlVerdict {
  if (raw.length > MAX_URL_LENGTH) return { ok: false, reason: `longer than ${MAX_URL_LENGTH} characters` };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: "not an absolute URL" };
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return { ok: false, reason: `the ${url.protocol} scheme is not allowed; use https` };
  }
  if (url.username || url.password) return { ok: false, reason: "credentials in the URL are not allowed" };
  if (url.hash) return { ok: false, reason: "a #fragment is never sent; remove it" };
  const host = url.hostname.replace(/\.$/, "");
  if (LOOPBACK_HOSTS.has(host)) {
    if (isDevelopment(env)) return { ok: true, url };
    return { ok: false, reason: "loopback addresses are allowed in local development only" };
  }
  if (url.protocol !== "https:") {
    return {
      ok: false,
      reason: isDevelopment(env)
        ? "only https URLs (or http to 127.0.0.1, localhost or [::1] in development)"
        : "only https URLs are allowed",
    };
  }
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) {
    return isReservedV4(host)
      ? { ok: false, reason: `${host} is a private or reserved address` }
      : { ok: true, url };
  }
  if (host.startsWith("[")) {
    return isReservedV6(host.slice(1, -1))
      ? { ok: false, reason: `${host} is a private or reserved address` }
      : { ok: true, url };
  }
  if (!host.includes(".") || host === "localhost" || PRIVATE_SUFFIXES.some((s) => host.endsWith(s))) {
    return { ok: false, reason: `${host} is not a public host name` };
  }
  return { ok: true, url };
}
