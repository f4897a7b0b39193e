import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** Clock ticks per second of /proc/<pid>/stat times (100 on every Linux this runs on; asked once). */
let ticks;
function clockTicks() {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** `{ pid, ppid, comm, cpuSeconds }` of one process, or null once it is gone. */
export function processStat(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // comm is in parentheses and may hold spaces; the fields after it are space-separated.
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const fields = text.slice(close + 2).split(" ");
  // After comm: state(0) ppid(1) ... utime(11) stime(12), in clock ticks.
  return {
    pid,
    comm: text.slice(open + 1, close),
    ppid: Number(fields[1]),
    cpuSeconds: (Number(fields[11]) + Number(fields[12])) / clockTicks(),
  };
}

/** Every live descendant of `root` (children, grandchildren, ...). */
export function descendants(root = process.pid) {
  const all = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = processStat(Number(entry));
    if (stat) all.push(stat);
  }
  const out = [];
  const parents = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const stat of all) {
      if (parents.has(stat.ppid) && !parents.has(stat.pid)) {
        parents.add(stat.pid);
        out.push(stat);
        grew = true;
      }
    }
  }
  return out;
}

/** The workerd processes Miniflare started for this Node process. */
export function workerdPids(root = process.pid) {
  return descendants(root)
    .filter((p) => p.comm === "workerd")
    .map((p) => p.pid);
}

/** CPU seconds of each thread of a process: tid -> seconds. */
export function threadCpu(pid) {
  const out = {};
  let tids = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
      out[tid] = (Number(fields[11]) + Number(fields[12])) / clockTicks();
    } catch {
      // The thread ended.
    }
  }
  return out;
}

/**
 * CPU seconds (user + system, all threads) used so far by the given processes, plus this Node process, and
 * per thread for `threadsOf` (to see whether one thread is the bottleneck). Take one before and one after a
 * phase and subtract with `cpuDelta`.
 */
export function cpuSample(pids, threadsOf = []) {
  const node = process.cpuUsage();
  return {
    at: performance.now(),
    node: (node.user + node.system) / 1e6,
    processes: Object.fromEntries(pids.map((pid) => [pid, processStat(pid)?.cpuSeconds ?? Number.NaN])),
    threads: Object.fromEntries(threadsOf.map((pid) => [pid, threadCpu(pid)])),
  };
}

/**
 * CPU seconds used between two samples: per process, summed, by the bench's own Node process, and for each
 * process sampled per thread the busiest thread's share of one core.
 */
export function cpuDelta(before, after) {
  const perProcess = {};
  let total = 0;
  for (const pid of Object.keys(after.processes)) {
    const used = after.processes[pid] - (before.processes[pid] ?? 0);
    perProcess[pid] = used;
    total += used;
  }
  const wallSeconds = (after.at - before.at) / 1000;
  const busiestThread = {};
  for (const [pid, threads] of Object.entries(after.threads ?? {})) {
    let busiest = 0;
    for (const [tid, seconds] of Object.entries(threads)) {
      busiest = Math.max(busiest, seconds - (before.threads?.[pid]?.[tid] ?? 0));
    }
    busiestThread[pid] = {
      seconds: busiest,
      cores: busiest / wallSeconds,
      threads: Object.keys(threads).length,
    };
  }
  return { wallSeconds, seconds: total, perProcess, busiestThread, nodeSeconds: after.node - before.node };
}
