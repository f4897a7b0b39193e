/**
 * Browsers cannot set headers on a WebSocket handshake, so the live view offers its access token as a second
 * subprotocol next to the one it speaks: `Sec-WebSocket-Protocol: soma.live.v1, soma.bearer.<token>`. The
 * server must answer with the protocol it picked (never the token) or the browser drops the connection.
 */
export const LIVE_PROTOCOL = "soma.live.v1";
const BEARER_PREFIX = "soma.bearer.";

/** The bearer offered in a Sec-WebSocket-Protocol header, or null when the client did not offer the live protocol. */
export function bearerFromWebSocketProtocols(header: string | undefined): string | null {
  if (!header) return null;
  const offered = header.split(",").map((p) => p.trim());
  if (!offered.includes(LIVE_PROTOCOL)) return null;
  const token = offered.find((p) => p.startsWith(BEARER_PREFIX))?.slice(BEARER_PREFIX.length);
  return token && /^[\w.-]{1,4096}$/.test(token) ? token : null;
}
