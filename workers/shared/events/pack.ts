import type { CloudEvent } from "./outbox";

/** Bytes per queue message stay well under the 128 KB message limit. */
const MAX_MESSAGE_BYTES = 96 * 1024;
/** The events consumer's envelope takes at most this many events per message. */
const MAX_EVENTS_PER_MESSAGE = 1000;

/** A queue message of the events queue: an envelope `{"spool"?, "events": [...], "traceparent"?}` as JSON text. */
export interface PackedMessage {
  body: string;
  contentType: "text";
  spool?: string;
}

/**
 * Packs events into queue messages of at most MAX_MESSAGE_BYTES each. Every event is serialised once, to
 * measure it, and the message body is built from those same strings: it travels as JSON text (`text`
 * content type), so the queue does not serialise the events a second time. The consumer parses and
 * validates it like any other message.
 */
export function packEvents(
  events: CloudEvent[],
  traceparent?: string,
  /** Names each message's spool object (carried in the body as `spool`); none without it. */
  spool?: () => string,
): PackedMessage[] {
  return packEventTexts(
    events.map((event) => JSON.stringify(event)),
    traceparent,
    spool,
  );
}

/** packEvents for events already serialised (the outbox keeps each event as its JSON text). */
export function packEventTexts(texts: string[], traceparent?: string, spool?: () => string): PackedMessage[] {
  let key = spool?.();
  const headOf = (k: string | undefined) => (k ? `{"spool":${JSON.stringify(k)},"events":[` : '{"events":[');
  let head = headOf(key);
  const tail = traceparent ? `],"traceparent":${JSON.stringify(traceparent)}}` : "]}";
  // The envelope's own bytes; each event adds its own and, after the first, a comma.
  const empty = head.length + utf8Bytes(tail) - 1;
  const messages: PackedMessage[] = [];
  let current: string[] = [];
  let size = empty;
  const flush = () => {
    messages.push({
      body: `${head}${current.join(",")}${tail}`,
      contentType: "text",
      ...(key ? { spool: key } : {}),
    });
    current = [];
    key = spool?.();
    head = headOf(key);
    size = empty;
  };
  for (const text of texts) {
    const bytes = utf8Bytes(text) + 1;
    if (current.length > 0 && (size + bytes > MAX_MESSAGE_BYTES || current.length === MAX_EVENTS_PER_MESSAGE))
      flush();
    current.push(text);
    size += bytes;
  }
  if (current.length > 0) flush();
  return messages;
}

const NON_ASCII = /[\u0080-\uffff]/;
const encoder = new TextEncoder();

/** UTF-8 size of a string: its length when it is ASCII, as nearly every event is. */
function utf8Bytes(text: string): number {
  return NON_ASCII.test(text) ? encoder.encode(text).byteLength : text.length;
}
