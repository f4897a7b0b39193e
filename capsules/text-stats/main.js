const WORD = /[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/gu;
const HAS_WORD = /[\p{L}\p{N}]/u;
const LETTER_OR_DIGIT = /[\p{L}\p{N}]/gu;

/**
 * Counts what a reader would count in a text. Words are runs of letters and digits (keeping inner
 * apostrophes and hyphens, so "don't" and "well-known" are one word each); frequency is case-insensitive and
 * the average word length counts letters and digits only.
 * @param {{ text: string, top?: number }} input
 */
async function run(input) {
  if (typeof input?.text !== "string") {
    throw new TypeError("input.text must be a string");
  }
  const top = input.top ?? 5;
  if (!Number.isInteger(top) || top < 0 || top > 100) {
    throw new RangeError("input.top must be an integer from 0 to 100");
  }
  const text = input.text;
  const words = text.match(WORD) ?? [];
  const counts = new Map();
  let letters = 0;
  for (const word of words) {
    const key = word.toLowerCase();
    counts.set(key, (counts.get(key) ?? 0) + 1);
    letters += word.match(LETTER_OR_DIGIT)?.length ?? 0;
  }
  const topWords = [...counts]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, top)
    .map(([word, count]) => ({ word, count }));
  const trimmed = text.trim();
  return {
    characters: [...text].length,
    words: words.length,
    lines: text === "" ? 0 : text.replace(/\r?\n$/, "").split(/\r?\n/).length,
    sentences:
      trimmed === ""
        ? 0
        : (trimmed.match(/[^.!?]+(?:[.!?]+|$)/g) ?? []).filter((s) => HAS_WORD.test(s)).length,
    paragraphs: trimmed === "" ? 0 : trimmed.split(/(?:\r?\n[ \t]*){2,}/).length,
    averageWordLength: words.length === 0 ? 0 : Math.round((letters / words.length) * 100) / 100,
    topWords,
  };
}

export default { run };
