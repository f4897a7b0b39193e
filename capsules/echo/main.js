/**
 * Returns the input exactly as received, so a run's output can be compared byte for byte with what was sent.
 * @param {unknown} input
 * @returns {Promise<unknown>}
 */
async function run(input) {
  return input;
}

export default { run };
