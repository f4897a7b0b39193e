#!/usr/bin/env bash
# The whole check, as `npm test` runs it: generated types, a dry-run deploy of every environment, lint and
# format, type checks, the Workers tests in workerd, then the end-to-end tests against the platform as
# `npm start` runs it. Every step runs even after a failure, so one run shows everything that is wrong; the
# exit status is non-zero if any failed.
# The last line counts the tests of both vitest runs: "N passed, N failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export XDG_CONFIG_HOME="$PWD/.wrangler/config"

# System packages the tests call: openssl verifies capsule signatures independently of the platform;
# clickhouse-server is the analytics store both test runs start (scripts/clickhouse.mjs), with its client
# for poking at it by hand. Chromium joins this list with the tests that need it.
APT_PACKAGES=(openssl clickhouse-server clickhouse-client chromium)

report_dir="$(mktemp -d "${TMPDIR:-/tmp}/soma-test-XXXXXX")"
trap 'rm -rf "$report_dir"' EXIT
failed_steps=()

step() {
  echo
  echo "==> $*"
}

# Installs the Debian packages that are missing, when running as root; otherwise says what to install.
ensure_apt_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    step "Installing ${missing[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "Missing system packages: ${missing[*]} (install them with apt-get as root); tests that need them will fail" >&2
    return 1
  fi
}

ensure_node_modules() {
  if [ ! -x node_modules/.bin/wrangler ] || [ ! -x node_modules/.bin/vitest ]; then
    step "Installing npm dependencies (npm ci)"
    npm ci
  fi
}

# run <label> <command...>: runs one step and records it when it fails.
run() {
  local label="$1" started=$SECONDS
  shift
  step "$label"
  if ! "$@"; then
    echo "<== $label: failed after $((SECONDS - started))s"
    failed_steps+=("$label")
    return 1
  fi
  echo "<== $label: $((SECONDS - started))s"
}

# with_deadline <seconds> <command...>: runs the command in its own process group and, if it is still
# running after <seconds>, stops the whole group (vitest, workerd, ClickHouse, Chromium) and fails with a
# message, so a stalled run costs minutes, not the whole CI budget.
with_deadline() {
  local seconds="$1" pid status expired="$report_dir/deadline-$$-$RANDOM"
  shift
  setsid "$@" &
  pid=$!
  (
    sleep "$seconds"
    touch "$expired"
    kill -TERM -- "-$pid" 2>/dev/null
    sleep 30
    kill -KILL -- "-$pid" 2>/dev/null
  ) >/dev/null 2>&1 &
  local watchdog=$!
  wait "$pid"
  status=$?
  kill "$watchdog" 2>/dev/null
  wait "$watchdog" 2>/dev/null
  if [ -e "$expired" ]; then
    echo "stopped after ${seconds}s: the run did not finish in time (the last file named above is where it stalled)" >&2
    return 124
  fi
  return "$status"
}

# vitest_run <label> <config> <deadline seconds>: one vitest run with a JSON report to count its tests.
vitest_run() {
  local label="$1" config="$2" deadline="$3"
  run "$label" with_deadline "$deadline" npx vitest run --config "$config" --reporter=default --reporter=json \
    --outputFile.json="$report_dir/$(basename "$(dirname "$config")").json"
}

ensure_apt_packages "${APT_PACKAGES[@]}" || failed_steps+=("system packages")
ensure_node_modules || failed_steps+=("npm ci")
# wrangler.toml serves static assets from web/dist, and wrangler refuses to start without it.
run "Building the web app" node scripts/build-web.mjs

if ! run "Checking worker-configuration.d.ts against wrangler.toml" \
  npx wrangler types --strict-vars=false --check; then
  echo "worker-configuration.d.ts is out of date: run \`npm run types\` and commit the result" >&2
fi

# Bundles the Worker for every environment without uploading anything (offline, a few seconds each), and
# compares the bindings each one gets (wrangler lists them) with the default's: wrangler does not inherit
# bindings or vars into environments, so one added at the top and forgotten in an environment fails here.
dry_run_deploys() {
  local env out status=0 expected=""
  for env in "" staging production; do
    out="$(mktemp -d "$report_dir/dry-run-XXXXXX")"
    echo "wrangler deploy --dry-run${env:+ --env $env}"
    if ! npx wrangler deploy --dry-run --outdir "$out" ${env:+--env "$env"} >"$out.log" 2>&1; then
      cat "$out.log" >&2
      status=1
      continue
    fi
    grep -o '^env\.[A-Za-z0-9_]*' "$out.log" | sort -u >"$out.bindings"
    if [ -z "$expected" ]; then
      expected="$out.bindings"
    elif ! diff -u --label default --label "${env}" "$expected" "$out.bindings" >&2; then
      echo "the $env environment's bindings differ from the default's (- missing, + extra)" >&2
      status=1
    fi
  done
  return "$status"
}
run "wrangler deploy --dry-run (default, staging and production)" dry_run_deploys
run "Lint and format (biome)" npx biome check .
# Advisories for the packages the Worker ships: any high or critical one fails (scripts/audit.mjs).
run "npm audit --omit=dev (no high or critical)" node scripts/audit.mjs
run "Type check: Worker" npx tsc --noEmit -p tsconfig.json
if [ -f tests/tsconfig.json ]; then
  run "Type check: Workers tests" npx tsc --noEmit -p tests/tsconfig.json
else
  echo "tests/tsconfig.json is missing; skipping the Workers tests type check"
fi
if [ -f tsconfig.node.json ]; then
  run "Type check: CLI and end-to-end tests (Node)" npx tsc --noEmit -p tsconfig.node.json
fi
# Deadlines: about four times what each run takes on a 2-core machine, together well inside CI's 90 minutes.
vitest_run "Workers tests (vitest in workerd)" tests/vitest.config.ts 1800
vitest_run "End-to-end tests (npm start's platform)" tests/e2e/vitest.config.ts 1200

# A run that failed without a failing test (a file that does not load, a crash before the report) counts
# as failed tests too, so the total never hides it.
counts="$(
  node -e '
    const fs = require("node:fs");
    let passed = 0, failed = 0;
    for (const file of process.argv.slice(1)) {
      try {
        const report = JSON.parse(fs.readFileSync(file, "utf8"));
        passed += report.numPassedTests;
        failed += report.numFailedTests;
        if (!report.success && report.numFailedTests === 0) failed += Math.max(1, report.numFailedTestSuites);
      } catch {
        console.error(`no test report at ${file}: that vitest run did not finish`);
        failed += 1;
      }
    }
    console.log(`${passed} ${failed}`);
  ' "$report_dir/tests.json" "$report_dir/e2e.json"
)"
read -r passed failed <<<"$counts"

echo
if [ "${#failed_steps[@]}" -gt 0 ]; then
  echo "Failed steps:"
  printf '  - %s\n' "${failed_steps[@]}"
fi
echo "$passed passed, $failed failed"
[ "${#failed_steps[@]}" -eq 0 ] && [ "$failed" -eq 0 ]
