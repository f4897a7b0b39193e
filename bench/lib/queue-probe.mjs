import { summarize } from "./stats.mjs";

const POISON_LOG = "poison agent-task message";
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/**
 * Measures the agent-tasks queue's own delivery latency: it sends a message the consumer cannot parse (no
 * project or attempt) straight to the queue and times it until the consumer logs it as poison, which the
 * consumer does first thing on receipt, before any Durable Object call. Send time is taken in Node just
 * before `send`; receipt time is workerd's timestamp of the log line (same machine clock).
 *
 * The log line names the queue's message id, not the body, so probes are matched to log lines in order. That
 * holds because the queue delivers in order (Miniflare's broker keeps one FIFO list and flushes it from the
 * front) and the consumer logs every poison message of a batch synchronously when the batch arrives, before its
 * first await. `series` sends one probe at a time; `start` sends at a steady rate while other work runs.
 *
 * The poison messages end in the dead-letter queue and in D1 `dead_letters`, as any poison message would, and
 * take a slot in the consumer's batches. Wire `onLog` into startPlatform's `onLog` before sending.
 */
export function queueProbe() {
  /** Send times of probes not yet received, oldest first. */
  const inFlight = [];
  const received = [];
  let producer = null;
  let loop = null;
  let stopping = false;
  let wake = null;
  return {
    onLog(log) {
      if (!log.message.includes(POISON_LOG) || inFlight.length === 0) return;
      const sentAt = inFlight.shift();
      received.push({ sentAt, ms: log.timestamp - sentAt });
      wake?.();
    },
    /** Binds the probe to a platform (its AGENT_TASKS producer, through Miniflare). */
    async attach(platform) {
      producer = await platform.mf.getQueueProducer("AGENT_TASKS");
    },
    async send() {
      const sentAt = Date.now();
      inFlight.push(sentAt);
      await producer.send({ benchProbe: true, sentAt });
    },
    /** Waits until every probe sent has been received, or `timeoutMs`; returns how many are still out. */
    async drain(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (inFlight.length > 0 && Date.now() < deadline) {
        await Promise.race([new Promise((done) => (wake = done)), sleep(100)]);
      }
      return inFlight.length;
    },
    /** `count` probes one after another (each waits for the one before), `gapMs` apart. */
    async series(count, gapMs = 100) {
      received.length = 0;
      let lost = 0;
      for (let i = 0; i < count; i++) {
        await this.send();
        if ((await this.drain(30_000)) > 0) {
          // Unmatched: later log lines could be mislabelled, so stop here.
          lost = inFlight.length;
          inFlight.length = 0;
          break;
        }
        await sleep(gapMs);
      }
      return { ...summarize(received.map((r) => r.ms)), lost };
    },
    /** Sends one probe every `everyMs` until `stop()`, whatever is in flight. */
    start(everyMs = 1000) {
      received.length = 0;
      stopping = false;
      loop = (async () => {
        let sent = 0;
        while (!stopping) {
          await this.send();
          sent++;
          await sleep(everyMs);
        }
        return sent;
      })();
    },
    /** Stops sending and waits (up to `timeoutMs`) for the probes still in the queue. */
    async stop(timeoutMs = 60_000) {
      stopping = true;
      const sent = await loop;
      loop = null;
      const lost = await this.drain(timeoutMs);
      inFlight.length = 0;
      return { ...summarize(received.map((r) => r.ms)), sent, lost, samples: received.slice() };
    },
  };
}
