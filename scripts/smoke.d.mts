/** Runs the post-deploy smoke checks against a platform; resolves to the number that failed. */
export function smoke(options: {
  url: string;
  token?: string;
  log?: (line: string) => void;
}): Promise<number>;
