import { concatBytes } from "../shared/encoding";
import { AppError } from "../shared/errors";

/** Reads a request body into memory, refusing (413) as soon as it passes `maxBytes`. */
export async function readBodyBounded(request: Request, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(request.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new AppError("PAYLOAD_TOO_LARGE", `The body is larger than ${maxBytes} bytes`, {
      limit: "compressed",
      maxBytes,
    });
  }
  if (!request.body) throw new AppError("BAD_REQUEST", "The request has no body");
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw new AppError("PAYLOAD_TOO_LARGE", `The body is larger than ${maxBytes} bytes`, {
        limit: "compressed",
        maxBytes,
      });
    }
    chunks.push(value);
  }
  return concatBytes(chunks, total);
}
