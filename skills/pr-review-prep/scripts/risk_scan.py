"""Risk scan for pr-review-prep: decides, deterministically, which review flags a change raises.

Reads the skill context as JSON on stdin. Prints one `flag:<id> — <text>` line per raised flag,
then one JSON object with the facts the prompt explains. The model never decides a flag.
Exit 2 with a message on stderr when the inputs cannot be scanned.
"""

import json
import os
import re
import shutil
import subprocess
import sys

MAX_LISTED_FILES = 200

CONFIG = re.compile(
    r"(^|/)application(-[a-zA-Z0-9]+)?\.ya?ml$"  # the seed article's rule
    r"|(^|/)(config|conf|settings)/"
    r"|(^|/)\.env(\.[^/]+)?$"
    r"|(^|/)settings(_[a-z0-9]+)?\.py$"
)
MIGRATION = re.compile(r"(^|/)db/migrate/|(^|/)migrations?/|(^|/)alembic/versions/")
AUTH = re.compile(r"(^|/)(auth|authentication|oauth|authn|authz)([/._-]|$)")
TEST = re.compile(
    r"(^|/)(tests?|specs?|__tests__)/"
    r"|(^|/)test_[^/]*\.py$|_test\.(py|go|rb|js|ts)$|_spec\.rb$"
    r"|\.(test|spec)\.[jt]sx?$|(^|/)[^/]*Tests?\.(java|kt|cs)$"
)
CODE_EXTENSIONS = {
    ".py", ".rb", ".go", ".js", ".jsx", ".ts", ".tsx", ".java", ".kt", ".rs", ".c", ".h", ".cc",
    ".cpp", ".cs", ".php", ".swift", ".scala", ".sh", ".sql",
}

FLAGS = [
    ("config-change", "review environment variable overrides", CONFIG),
    ("db-migration", "verify rollback plan exists", MIGRATION),
    ("auth-change", "requires security review", AUTH),
]


def fail(message):
    print(f"risk_scan: {message}", file=sys.stderr)
    sys.exit(2)


def is_test(path):
    return bool(TEST.search(path))


def is_code(path):
    return os.path.splitext(path)[1] in CODE_EXTENSIONS and not is_test(path)


def count_lines(additions):
    """additions: [(path, added lines)] -> (code lines, test lines)."""
    code = sum(n for path, n in additions if is_code(path))
    tests = sum(n for path, n in additions if is_test(path))
    return code, tests


def from_git(repo, base):
    if not os.path.isdir(repo):
        fail(f"repo_path {repo!r} is not a directory")
    if shutil.which("git") is None:
        fail("repo_path needs git, which is not installed")
    check = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"],
        capture_output=True, text=True,
    )
    if check.returncode != 0:
        fail(f"base_ref {base!r} is not a commit in {repo}")
    diff = subprocess.run(
        ["git", "-C", repo, "diff", "--numstat", "-z", "--no-renames", f"{base}...HEAD", "--"],
        capture_output=True, text=True,
    )
    if diff.returncode != 0:
        fail(f"git diff failed: {diff.stderr.strip()}")
    additions = []
    for record in diff.stdout.split("\0"):
        if not record:
            continue
        added, _deleted, path = record.split("\t", 2)
        additions.append((path, int(added) if added.isdigit() else 0))  # "-" for binary files
    return additions


def from_gh(number, repo):
    if shutil.which("gh") is None:
        fail("pr_number needs gh, which is not installed (or give changed_files)")
    argv = ["gh", "pr", "view", str(number), "--json", "files"]
    if repo:
        argv += ["--repo", repo]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"gh pr view failed: {result.stderr.strip()}")
    files = json.loads(result.stdout).get("files", [])
    return [(f["path"], int(f.get("additions", 0))) for f in files]


def gather(ctx):
    """(source, files, code lines added, test lines added) from the first way in that is present."""
    if ctx.get("changed_files") is not None:
        return "inputs", list(ctx["changed_files"]), ctx.get("code_lines_added") or 0, ctx.get("test_lines_added") or 0
    if ctx.get("repo_path"):
        additions = from_git(ctx["repo_path"], ctx.get("base_ref") or "origin/main")
    elif ctx.get("pr_number") is not None:
        additions = from_gh(ctx["pr_number"], ctx.get("repo"))
    else:
        fail("give changed_files (with code_lines_added, test_lines_added), repo_path, or pr_number")
    source = "git" if ctx.get("repo_path") else "gh"
    return (source, [path for path, _ in additions], *count_lines(additions))


def main():
    ctx = json.load(sys.stdin)
    source, files, code_lines, test_lines = gather(ctx)
    matched = {}
    for flag_id, text, pattern in FLAGS:
        hits = [path for path in files if pattern.search(path)]
        if hits:
            matched[flag_id] = hits
            print(f"flag:{flag_id} — {text}")
    if test_lines < code_lines // 3:
        matched["insufficient-test-coverage"] = [f"{code_lines} code lines, {test_lines} test lines added"]
        print("flag:insufficient-test-coverage — consider adding tests")
    scan = {
        "source": source,
        "file_count": len(files),
        "files": files[:MAX_LISTED_FILES],
        "code_lines_added": code_lines,
        "test_lines_added": test_lines,
        "matched": matched,
    }
    print(json.dumps({"scan": scan}, sort_keys=True))


if __name__ == "__main__":
    main()
