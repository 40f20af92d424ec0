"""The user documentation stays consistent with the repository.

README.md and docs/*.md: every relative link points to a file that exists, and every
`python -m experiments.X` / `python -m benchmarks.X` they name is a module that exists
(found, not run). The README's first bash block holds exactly the two set-up commands,
and `.ci/run` runs the second. README, docs and benchmark reports are written for
users: no run diaries ("session N").
"""

import importlib.util
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
USER_PAGES = [README] + DOCS
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.md"))

# [text](target) and ![alt](target); target up to whitespace or ')'.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MODULE = re.compile(r"python3?\s+-m\s+((?:experiments|benchmarks)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _rel(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT))


def _first_bash_block(text: str) -> list[str]:
  """Lines of the first ```bash block that are neither blank nor comments (.ci/run's rule)."""
  lines, inside = [], False
  for line in text.splitlines():
    if not inside:
      inside = line == "```bash"
      continue
    if line.startswith("```"):
      return lines
    if line.strip() and not line.startswith("#"):
      lines.append(line)
  raise AssertionError("README.md has no closed ```bash block")


def test_user_pages_exist():
  assert README.is_file()
  names = {p.name for p in DOCS}
  assert {"demo.md", "design.md", "findings.md"} <= names, names


@pytest.mark.parametrize("page", USER_PAGES, ids=_rel)
def test_relative_links_point_to_files(page):
  missing = []
  for target in _LINK.findall(page.read_text()):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
      continue  # http(s):, mailto:, in-page anchors
    path = (page.parent / target.split("#", 1)[0]).resolve()
    if not path.exists():
      missing.append(target)
  assert not missing, f"{_rel(page)} links to missing files: {missing}"


@pytest.mark.parametrize("page", USER_PAGES, ids=_rel)
def test_named_modules_exist(page):
  names = sorted(set(_MODULE.findall(page.read_text())))
  missing = [n for n in names if importlib.util.find_spec(n) is None]
  assert not missing, f"{_rel(page)} names modules that do not exist: {missing}"


def test_readme_names_modules():
  # The pattern above must actually match the README's commands, or the check is empty.
  assert "experiments.sample" in _MODULE.findall(README.read_text())


def test_readme_first_bash_block_is_the_two_commands():
  commands = _first_bash_block(README.read_text())
  assert len(commands) == 2, commands
  assert "-m experiments.sample" in commands[0]
  assert "-m pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
  second = _first_bash_block(README.read_text())[1]
  ci = (ROOT / ".ci" / "run").read_text()
  found = re.search(r'^cmd="\$\((.*)\)"$', ci, re.M)
  assert found, ".ci/run no longer reads its command into cmd=\"$(...)\""
  extracted = subprocess.run(["bash", "-c", found.group(1)], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
  assert extracted == second
  assert re.search(r'bash -c "[^"]*\$cmd"', ci), ".ci/run does not run the command it read"


@pytest.mark.parametrize("page", USER_PAGES + RESULTS, ids=_rel)
def test_no_session_diary(page):
  hits = [f"{i}: {line.strip()}" for i, line in enumerate(page.read_text().splitlines(), 1)
          if "session" in line.lower()]
  assert not hits, f"{_rel(page)} reads like a run diary:\n" + "\n".join(hits)


@pytest.mark.parametrize("page", RESULTS, ids=_rel)
def test_result_files_not_named_by_when(page):
  assert not re.search(r"session|\d{4}-\d{2}-\d{2}", page.name, re.I), page.name
