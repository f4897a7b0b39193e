import { createHmac, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { integerOption, requiredOption, stringOption } from "../args.ts";
import { COMMON_HELP, type Command } from "../command.ts";
import { CliError, UsageError } from "../errors.ts";
import { emit } from "../output.ts";

/** Receivers reject deliveries signed longer ago (or further ahead) than this, which stops replays. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

export type WebhookVerification =
  | { valid: true; timestamp: number; ageSeconds: number }
  | { valid: false; reason: string };

/**
 * Checks a `Soma-Signature` header (`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`) the way
 * a receiver should: over the raw body bytes exactly as received (never re-serialised JSON), comparing in
 * constant time, accepting any of several `v1` values, and refusing a timestamp more than `toleranceSeconds`
 * away from `now` (unix seconds) so a captured delivery cannot be replayed later.
 */
export function verifyWebhookSignature(input: {
  secret: string;
  header: string;
  body: string | Uint8Array;
  toleranceSeconds?: number;
  now?: number;
}): WebhookVerification {
  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const part of input.header.split(",")) {
    const [key, value = ""] = part.trim().split("=", 2) as [string, string?];
    if (key === "t" && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    if (key === "v1" && /^[0-9a-f]{64}$/i.test(value)) signatures.push(value.toLowerCase());
  }
  if (timestamp === undefined) return { valid: false, reason: "the header has no t=<unix seconds>" };
  if (signatures.length === 0) return { valid: false, reason: "the header has no v1=<hex HMAC-SHA256>" };
  const now = input.now ?? Math.floor(Date.now() / 1000);
  const tolerance = input.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  const ageSeconds = now - timestamp;
  if (Math.abs(ageSeconds) > tolerance) {
    return {
      valid: false,
      reason:
        ageSeconds > 0
          ? `signed ${ageSeconds} s ago, more than the ${tolerance} s tolerance (a replay?)`
          : `signed ${-ageSeconds} s in the future, more than the ${tolerance} s tolerance`,
    };
  }
  const expected = createHmac("sha256", input.secret)
    .update(`${timestamp}.`)
    .update(typeof input.body === "string" ? Buffer.from(input.body, "utf8") : input.body)
    .digest();
  const matches = signatures.some((hex) => timingSafeEqual(Buffer.from(hex, "hex"), expected));
  if (!matches) return { valid: false, reason: "no v1 signature matches the body and secret" };
  return { valid: true, timestamp, ageSeconds };
}

async function readBody(path: string, cwd: string): Promise<Buffer> {
  if (path === "-") {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Buffer));
    return Buffer.concat(chunks);
  }
  const full = resolve(cwd, path);
  try {
    return await readFile(full);
  } catch (error) {
    throw new CliError(`Cannot read the body file ${full}: ${(error as Error).message}`);
  }
}

/** `soma webhook-verify`: checks a webhook delivery's Soma-Signature as a receiver does. */
export const webhookVerifyCommand: Command = {
  name: "webhook-verify",
  summary: "Check a webhook delivery's Soma-Signature header",
  help: `Usage: soma webhook-verify --signature <header> --body-file <file|-> [--secret <secret>] [--tolerance <s>]

Checks a delivery the way a receiver must: the Soma-Signature header is
  t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
computed over the raw request body exactly as received. Deliveries signed more than --tolerance seconds
(300) from now are refused, so a captured request cannot be replayed. Exits 0 when valid, 1 when not.

Options:
  --signature <header>  The Soma-Signature header value
  --body-file <file>    The raw request body ("-" reads standard input)
  --secret <secret>     The webhook's secret (else $SOMA_WEBHOOK_SECRET)
  --tolerance <s>       Seconds a signature stays acceptable (300)

${COMMON_HELP}`,
  options: {
    signature: { type: "string" },
    "body-file": { type: "string" },
    secret: { type: "string" },
    tolerance: { type: "string" },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }, { io, env, cwd }) {
    const header = requiredOption(values, "signature");
    const bodyFile = requiredOption(values, "body-file");
    const secret = stringOption(values, "secret") ?? env.SOMA_WEBHOOK_SECRET;
    if (!secret) throw new UsageError("Give the webhook's secret with --secret or $SOMA_WEBHOOK_SECRET");
    const toleranceSeconds = integerOption(values, "tolerance", 1) ?? DEFAULT_TOLERANCE_SECONDS;
    const body = await readBody(bodyFile, cwd);
    const result = verifyWebhookSignature({ secret, header, body, toleranceSeconds });
    if (!result.valid) {
      throw new CliError(`Invalid signature: ${result.reason}`, { code: "SIGNATURE_INVALID" });
    }
    emit(io, values.json === true, result, () => `Valid signature (signed ${result.ageSeconds} s ago)`);
    return 0;
  },
};
