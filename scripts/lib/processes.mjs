import { readdirSync, readFileSync } from "node:fs";
import { connect, createServer } from "node:net";

/**
 * Live (non-zombie) processes in a process group. Reading /proc rather than `kill(-pgid, 0)` matters in
 * containers whose init never reaps orphans: a zombie still answers signal 0 but holds no port or file.
 * @param {number} pgid
 * @returns {number[]}
 */
export function liveGroupMembers(pgid) {
  let pids;
  try {
    pids = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    try {
      process.kill(-pgid, 0);
      return [pgid];
    } catch (error) {
      return error.code === "EPERM" ? [pgid] : [];
    }
  }
  const members = [];
  for (const pid of pids) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    // Fields after the command name, which is in parentheses and may itself contain spaces or ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] !== "Z" && Number(fields[2]) === pgid) members.push(Number(pid));
  }
  return members;
}

/**
 * Whether a process exists and is not a zombie.
 * @param {number} pid
 * @returns {boolean}
 */
export function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if (error.code !== "EPERM") return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return true;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Stops a whole process group: SIGTERM, then SIGKILL for whatever is still alive after the grace period.
 * @param {number} pgid
 * @param {number} [graceMs]
 * @returns {Promise<boolean>} whether the group is gone
 */
export async function stopProcessGroup(pgid, graceMs = 8000) {
  const signal = (name) => {
    try {
      process.kill(-pgid, name);
    } catch {
      // Already gone.
    }
  };
  signal("SIGTERM");
  for (const deadline = Date.now() + graceMs; Date.now() < deadline; await sleep(100)) {
    if (liveGroupMembers(pgid).length === 0) return true;
  }
  signal("SIGKILL");
  for (const deadline = Date.now() + 3000; Date.now() < deadline; await sleep(100)) {
    if (liveGroupMembers(pgid).length === 0) return true;
  }
  return false;
}

/**
 * A TCP port on 127.0.0.1 that nothing listens on right now.
 * @returns {Promise<number>}
 */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/**
 * Whether 127.0.0.1:port is taken, i.e. binding it fails.
 * @param {number} port
 * @returns {Promise<boolean>}
 */
export function portInUse(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(true));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(false)));
  });
}

/**
 * Whether something accepts TCP connections on 127.0.0.1:port.
 * @param {number} port
 * @returns {Promise<boolean>}
 */
export function isAcceptingConnections(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.setTimeout(2000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}
