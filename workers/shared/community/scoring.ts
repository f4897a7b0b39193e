/**
 * The prior of the Bayesian average: every capsule starts as if it had PRIOR_VOTES ratings of PRIOR_MEAN stars.
 * The prior is fixed rather than the platform's running mean so that the score stored on each capsule
 * (capsules.rating_avg, which the catalog sorts by) is recomputed from that capsule's ratings alone and stays
 * comparable with every other capsule's without rewriting them all on each rating. 3.5 sits below the mean of
 * typical marketplaces (ratings skew towards 4-5), so a capsule has to earn a high score with a record: three
 * 5-star ratings score 3.85 while two hundred ratings averaging 4.6 score 4.55.
 */
export const PRIOR_MEAN = 3.5;
/** How many ratings the prior weighs as; about where a capsule's own ratings start to dominate its score. */
export const PRIOR_VOTES = 10;

/** The Bayesian average (PRIOR_VOTES * PRIOR_MEAN + sum) / (PRIOR_VOTES + count), or null with no ratings. */
export function bayesianAverage(sum: number, count: number): number | null {
  if (count === 0) return null;
  return (PRIOR_VOTES * PRIOR_MEAN + sum) / (PRIOR_VOTES + count);
}

/** How far back trending looks for installs and executions. */
export const TRENDING_WINDOW_DAYS = 7;
/** A trending signal weighs exp(-age in days / TRENDING_DECAY_DAYS): half its weight after about 1.4 days. */
export const TRENDING_DECAY_DAYS = 2;

/** The weight of one trending signal that is `ageDays` old; nothing outside the window counts. */
export function trendingWeight(ageDays: number): number {
  if (ageDays > TRENDING_WINDOW_DAYS) return 0;
  return Math.exp(-Math.max(ageDays, 0) / TRENDING_DECAY_DAYS);
}

/** Rounds a score for display; ordering always uses the unrounded value. */
export function roundScore(value: number, digits = 3): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
