"""Runs a Python project's unittest suite and smoke-runs its command line, on a SomaAgent runner.

The runner starts this script with the project's artefacts as the working directory and these
environment variables: SOMA_INPUT (the task input, JSON), SOMA_OUTPUT (where to write the result,
JSON) and SOMA_WORKSPACE. Failing tests are a result, not a crash: the script exits 0 and reports
them in output.tests so the quality gate can judge; it exits 1 only when it cannot run at all.
"""

import json
import os
import re
import subprocess
import sys
import time

DEFAULT_COMMAND = ["-m", "unittest", "discover", "-v"]
SUITE_TIMEOUT_SECONDS = 240
SMOKE_TIMEOUT_SECONDS = 30
LOG_TAIL_CHARACTERS = 6000
RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
OUTCOME = re.compile(r"^(OK|FAILED)(?: \((.*)\))?\s*$", re.MULTILINE)
PROBLEM = re.compile(r"^(FAIL|ERROR): (\S+) \(([^)]*)\)", re.MULTILINE)


def log(message):
    """Print a progress line for the runner's log."""
    print(f"[python-test-runner] {message}", flush=True)


def child_env():
    """Return the environment for the project's processes: no bytecode files, UTF-8 output."""
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_suite(command):
    """Run the unittest command in the project and return its counts and output."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, *command],
            capture_output=True,
            text=True,
            timeout=SUITE_TIMEOUT_SECONDS,
            env=child_env(),
            check=False,
        )
        output = done.stdout + done.stderr
        exit_code = done.returncode
    except subprocess.TimeoutExpired as expired:
        output = f"{expired.stdout or ''}{expired.stderr or ''}\nTimed out after {SUITE_TIMEOUT_SECONDS} s"
        exit_code = None
    counts = parse_counts(output)
    counts["exitCode"] = exit_code
    counts["seconds"] = round(time.monotonic() - started, 2)
    return counts, output


def parse_counts(output):
    """Read unittest's summary: tests run, failures, errors, skips and the failing tests."""
    ran = RAN.search(output)
    outcome = OUTCOME.search(output, ran.end() if ran else 0)
    details = {}
    if outcome and outcome.group(2):
        for part in outcome.group(2).split(","):
            key, _, value = part.strip().partition("=")
            if value.isdigit():
                details[key] = int(value)
    counts = {
        "ran": int(ran.group(1)) if ran else 0,
        "failures": details.get("failures", 0) + details.get("unexpected successes", 0),
        "errors": details.get("errors", 0),
        "skipped": details.get("skipped", 0) + details.get("expected failures", 0),
        "ok": bool(outcome) and outcome.group(1) == "OK",
        "problems": [f"{kind}: {test} ({where})" for kind, test, where in PROBLEM.findall(output)],
    }
    if not ran:
        # The suite never reported (import error before discovery, crash, timeout): one error.
        counts["errors"] = max(1, counts["errors"])
    return counts


def run_smoke(package, check):
    """Run python3 -m <package> with the check's arguments and compare what it does."""
    args = [str(arg) for arg in check.get("args", [])]
    expected_exit = int(check.get("exitCode", 0))
    try:
        done = subprocess.run(
            [sys.executable, "-m", package, *args],
            capture_output=True,
            text=True,
            timeout=SMOKE_TIMEOUT_SECONDS,
            env=child_env(),
            check=False,
        )
        exit_code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        exit_code, stdout, stderr = None, "", f"timed out after {SMOKE_TIMEOUT_SECONDS} s"
    problems = []
    if exit_code != expected_exit:
        problems.append(f"exit code {exit_code}, expected {expected_exit}")
    if "stdout" in check and stdout.strip() != str(check["stdout"]):
        problems.append(f"printed {stdout.strip()!r}, expected {check['stdout']!r}")
    if "stderrContains" in check and str(check["stderrContains"]) not in stderr:
        problems.append(f"stderr {stderr.strip()!r} does not mention {check['stderrContains']!r}")
    if expected_exit != 0 and stdout.strip():
        problems.append(f"printed {stdout.strip()!r} on stdout although it failed")
    return {
        "args": args,
        "exitCode": exit_code,
        "stdout": stdout[-500:],
        "stderr": stderr[-500:],
        "ok": not problems,
        "problems": problems,
    }


def fence(language, body):
    """Return body as a Markdown code block whose fence is longer than any backtick run inside."""
    longest = max([2] + [len(run) for run in re.findall(r"`+", body)])
    marks = "`" * (longest + 1)
    return f"{marks}{language}\n{body}\n{marks}"


def transcript(package, smoke):
    """Return the smoke runs as a console transcript."""
    lines = []
    for run in smoke:
        lines.append(f"$ python3 -m {package} {' '.join(run['args'])}")
        lines.extend(part.rstrip() for part in (run["stdout"], run["stderr"]) if part.strip())
        lines.append(f"# exit code {run['exitCode']}{'' if run['ok'] else ': ' + '; '.join(run['problems'])}")
    return "\n".join(lines)


def report(package, command, suite, suite_output, smoke, totals):
    """Return the Markdown test report."""
    verdict = "passed" if totals["failed"] == 0 and totals["errors"] == 0 else "FAILED"
    problems = suite["problems"] + [
        f"smoke: python3 -m {package} {' '.join(run['args'])}: {'; '.join(run['problems'])}"
        for run in smoke
        if not run["ok"]
    ]
    lines = [
        f"# Test report: {package}",
        "",
        f"Result: **{verdict}**. {totals['passed']} checks passed, {totals['failed']} failed, "
        f"{totals['errors']} errors, {totals['skipped']} skipped.",
        "",
        "## Unit tests",
        "",
        f"`python3 {' '.join(command)}` ran {suite['ran']} tests in {suite['seconds']} s "
        f"(exit code {suite['exitCode']}): {suite['failures']} failures, {suite['errors']} errors, "
        f"{suite['skipped']} skipped.",
        "",
        fence("text", suite_output.strip()[-LOG_TAIL_CHARACTERS:]),
        "",
        "## Example runs of the command line",
        "",
        f"{sum(1 for run in smoke if run['ok'])} of {len(smoke)} runs behaved as specified.",
        "",
        fence("console", transcript(package, smoke)),
    ]
    if problems:
        lines += ["", "## Problems", ""] + [f"- {problem}" for problem in problems]
    return "\n".join(lines) + "\n"


def main():
    """Run the suite and the smoke checks, write the result JSON and return the exit code."""
    try:
        with open(os.environ["SOMA_INPUT"], encoding="utf-8") as handle:
            task = json.load(handle)
        output_path = os.environ["SOMA_OUTPUT"]
    except (KeyError, OSError, ValueError) as error:
        print(f"cannot read the task input: {error}", file=sys.stderr)
        return 1
    package = str(task.get("package", ""))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", package):
        print(f"input.package {package!r} is not a Python package name", file=sys.stderr)
        return 1
    command = [str(part) for part in task.get("command") or DEFAULT_COMMAND]
    report_path = str(task.get("report") or "test-report.md")
    log(f"python {sys.version.split()[0]} in {os.getcwd()}")
    log(f"running python3 {' '.join(command)}")
    suite, suite_output = run_suite(command)
    print(suite_output, flush=True)
    log(f"ran {suite['ran']}: {suite['failures']} failures, {suite['errors']} errors")
    smoke = [run_smoke(package, check) for check in task.get("smoke", [])]
    for run in smoke:
        log(f"python3 -m {package} {' '.join(run['args'])}: {'ok' if run['ok'] else run['problems']}")
    smoke_failed = sum(1 for run in smoke if not run["ok"])
    totals = {
        "passed": suite["ran"] - suite["failures"] - suite["errors"] - suite["skipped"]
        + len(smoke) - smoke_failed,
        "failed": suite["failures"] + smoke_failed,
        "errors": suite["errors"],
        "skipped": suite["skipped"],
    }
    content = report(package, command, suite, suite_output, smoke, totals)
    result = {
        "tests": totals,
        "unittest": suite,
        "smoke": smoke,
        "files": [{"path": report_path, "content": content}],
        "artifacts": [{"path": report_path, "content": content}],
        "summary": f"{totals['passed']} passed, {totals['failed']} failed, {totals['errors']} errors",
    }
    with open(output_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    log(result["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
