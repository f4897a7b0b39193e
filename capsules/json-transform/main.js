const FORBIDDEN_SEGMENTS = new Set(["__proto__", "prototype", "constructor"]);

/**
 * Splits a dotted path, refusing segments that would reach an object's prototype.
 * @param {unknown} path
 * @returns {string[]}
 */
function parsePath(path) {
  if (typeof path !== "string" || path === "") {
    throw new TypeError("field paths must be non-empty strings");
  }
  const segments = path.split(".");
  for (const segment of segments) {
    if (segment === "" || FORBIDDEN_SEGMENTS.has(segment)) {
      throw new TypeError(`invalid field path "${path}"`);
    }
  }
  return segments;
}

/** @param {unknown} value */
function isRecord(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * @param {unknown} value
 * @param {string[]} segments
 * @returns {{ found: boolean, value?: unknown }}
 */
function getPath(value, segments) {
  let current = value;
  for (const segment of segments) {
    if (Array.isArray(current) && /^\d+$/.test(segment)) {
      const index = Number(segment);
      if (index >= current.length) return { found: false };
      current = current[index];
    } else if (isRecord(current) && Object.hasOwn(current, segment)) {
      current = current[segment];
    } else {
      return { found: false };
    }
  }
  return { found: true, value: current };
}

/**
 * @param {Record<string, unknown>} target
 * @param {string[]} segments
 * @param {unknown} value
 */
function setPath(target, segments, value) {
  let current = target;
  for (const segment of segments.slice(0, -1)) {
    if (!isRecord(current[segment])) current[segment] = {};
    current = /** @type {Record<string, unknown>} */ (current[segment]);
  }
  current[/** @type {string} */ (segments.at(-1))] = value;
}

/**
 * @param {Record<string, unknown>} target
 * @param {string[]} segments
 */
function deletePath(target, segments) {
  const parent = getPath(target, segments.slice(0, -1));
  if (parent.found && isRecord(parent.value)) delete parent.value[/** @type {string} */ (segments.at(-1))];
}

/**
 * Applies pick, then rename, then omit to one record. Renamed sources count as picked, so
 * `{ pick: ["id"], rename: { "user.email": "email" } }` yields `{ id, email }`.
 * @param {Record<string, unknown>} record
 * @param {{ pick?: string[][], rename: [string[], string[]][], omit: string[][] }} plan
 */
function transformRecord(record, plan) {
  /** @type {Record<string, unknown>} */
  let out;
  if (plan.pick) {
    out = {};
    for (const segments of plan.pick) {
      const hit = getPath(record, segments);
      if (hit.found) setPath(out, segments, structuredClone(hit.value));
    }
  } else {
    out = structuredClone(record);
  }
  const moved = [];
  for (const [from, to] of plan.rename) {
    const hit = getPath(record, from);
    if (!hit.found) continue;
    deletePath(out, from);
    moved.push([to, structuredClone(hit.value)]);
  }
  for (const [to, value] of moved) setPath(out, to, value);
  for (const segments of plan.omit) deletePath(out, segments);
  return out;
}

/**
 * @param {{ data: Record<string, unknown> | Record<string, unknown>[], pick?: string[], rename?: Record<string, string>, omit?: string[] }} input
 */
async function run(input) {
  if (!isRecord(input)) throw new TypeError("input must be an object");
  const { data, pick, rename = {}, omit = [] } = input;
  const records = Array.isArray(data) ? data : [data];
  if (!records.every(isRecord)) throw new TypeError("input.data must be an object or an array of objects");
  if (pick !== undefined && !Array.isArray(pick)) throw new TypeError("input.pick must be an array of paths");
  if (!isRecord(rename)) throw new TypeError("input.rename must be an object of from -> to paths");
  if (!Array.isArray(omit)) throw new TypeError("input.omit must be an array of paths");

  const plan = {
    pick: pick?.map(parsePath),
    rename: Object.entries(rename).map(([from, to]) => [parsePath(from), parsePath(to)]),
    omit: omit.map(parsePath),
  };
  const transformed = records.map((record) => transformRecord(record, plan));
  return { data: Array.isArray(data) ? transformed : transformed[0] };
}

export default { run };
