/** "1 dependency", "2 dependencies". */
export function plural(n: number, one: string, many: string): string {
  return `${new Intl.NumberFormat("en").format(n)} ${n === 1 ? one : many}`;
}

/** What each permission lets a capsule do, in the words an operator decides on. */
export function permissionInWords(permission: string): string {
  if (permission.startsWith("network.egress:")) {
    const host = permission.slice("network.egress:".length);
    return host.startsWith("*.")
      ? `Send requests to any host under ${host.slice(2)} on the internet`
      : `Send requests to ${host} on the internet`;
  }
  switch (permission) {
    case "artifacts.read":
      return "Read the files your project has produced so far";
    case "artifacts.write":
      return "Write files into your project";
    case "llm":
      return "Call a language model, which uses tokens from your budget";
    case "logging":
      return "Write log lines you can read later";
    case "runner.exec":
      return "Run programs (shell, Python) on a runner machine you operate";
    default:
      return permission;
  }
}

export function pricingInWords(model: string, amountUsd?: number): string {
  if (model === "free") return "Free";
  const amount = amountUsd === undefined ? "" : `$${amountUsd} `;
  return model === "per_execution" ? `${amount}per execution` : `${amount}per 1,000 tokens`;
}

export const CATEGORIES = [
  "Code",
  "Data",
  "Testing",
  "Documentation",
  "DevOps",
  "Security",
  "Research",
  "Writing",
  "Planning",
  "Review",
  "Other",
] as const;
