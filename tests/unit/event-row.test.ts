import { describe, expect, it } from "vitest";
import { eventRow } from "../../workers/shared/analytics/events";
import type { CloudEvent } from "../../workers/shared/events/outbox";

function event(time: string, data: Record<string, unknown> = {}): CloudEvent {
  return { specversion: "1.0", id: "evt_1", source: "soma://test", type: "soma.usage.tokens", time, data };
}

describe("eventRow", () => {
  it("writes event times as UTC DateTime text, whatever offset the producer used", () => {
    expect(eventRow(event("2026-01-02T03:04:05Z"), "2026-01-02 03:04:06").time).toBe("2026-01-02 03:04:05");
    expect(eventRow(event("2026-01-02T03:04:05.123456Z"), "x").time).toBe("2026-01-02 03:04:05");
    expect(eventRow(event("2026-01-02T03:04:05+02:00"), "x").time).toBe("2026-01-02 01:04:05");
    expect(eventRow(event("2026-01-01T23:30:00-01:00"), "x").time).toBe("2026-01-02 00:30:00");
  });

  it("keeps the batch's ingestion time and flattens the analytics columns", () => {
    const row = eventRow(
      event("2026-01-02T03:04:05Z", {
        accountId: "a1",
        inputTokens: 7,
        outputTokens: -1,
        outcome: "failure",
      }),
      "2026-01-02 03:04:06",
    );
    expect(row).toMatchObject({
      ingested_at: "2026-01-02 03:04:06",
      account_id: "a1",
      input_tokens: 7,
      output_tokens: 0,
      status: "failure",
    });
  });
});
