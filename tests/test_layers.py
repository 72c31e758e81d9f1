"""The layers of the code and which way their imports point (CONTRIBUTING.md, Layout):

    programs (train/)  ->  harness (cli, harness, loop)  ->  the loop's parts (checkpoints, workdir, signals, writers)
                       ->  techniques  ->  models, data, parallel  ->  errors

and no function in the library or the programs is over MAX_FUNCTION_LINES lines (one that long is two ideas).

Read from the source with `ast`, so a new import that breaks the rule fails here, not in review."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# the rank of each module of jaxtricks/ (a package's modules share its rank); imports go to a rank <= one's own
RANKS = {
    "errors": 0,
    "data": 1, "models": 1, "images": 1, "parallel": 1, "assets": 1, "onednn": 1,
    "losses": 2, "langevin": 2, "replay": 2, "metrics": 2, "gan": 2, "ebm": 2, "classifier": 2, "optim": 2,
    "writers": 3, "checkpoints": 3, "workdir": 3, "signals": 3,
    "loop": 4, "harness": 4, "cli": 4,
}
MAX_FUNCTION_LINES = 60   # from the def line to the last line, docstring included


def _modules(folder: Path, package: str) -> dict[str, Path]:
  out = {}
  for path in folder.rglob("*.py"):
    parts = path.relative_to(folder.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


def _imports(path: Path, known: set[str]) -> set[str]:
  """The modules of `known` that the file imports (`from pkg import mod` counts as pkg.mod when that is a module)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      submodules = {f"{node.module}.{a.name}" for a in node.names} & known
      found |= submodules
      if len(submodules) < len(node.names):   # names defined by the module (package) itself
        found.add(node.module)
  return {m for m in found if m in known}


def _graph(root: str) -> dict[str, set[str]]:
  modules = _modules(REPO / root, root)
  return {m: _imports(p, set(modules)) - {m} for m, p in modules.items()}


def _rank(module: str) -> int:
  return RANKS[module.split(".")[1]] if "." in module else 0


def test_every_library_module_has_a_layer():
  missing = [m for m in _graph("jaxtricks") if "." in m and m.split(".")[1] not in RANKS]
  assert not missing, f"add these to RANKS (and CONTRIBUTING.md's Layout): {missing}"


def test_library_imports_point_down_the_layers():
  bad = [(m, d) for m, deps in _graph("jaxtricks").items() for d in deps
         if "." in m and "." in d and _rank(d) > _rank(m)]
  assert not bad, bad


def test_library_import_graph_has_no_cycle():
  graph = _graph("jaxtricks")
  state: dict[str, int] = {}

  def visit(m, path):
    state[m] = 1
    for d in graph[m]:
      if state.get(d) == 1:
        raise AssertionError("import cycle: " + " -> ".join(path + [m, d]))
      if d not in state:
        visit(d, path + [m])
    state[m] = 2

  for m in graph:
    if m not in state:
      visit(m, [])


def test_the_graph_reader_sees_a_cycle(tmp_path, monkeypatch):
  """The cycle check can fail: a package whose two modules import each other is reported."""
  pkg = tmp_path / "pkg"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from pkg import b\n")
  (pkg / "b.py").write_text("import pkg.a\n")
  monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
  assert _graph("pkg") == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}


def test_the_loop_parts_import_no_part_above_them():
  """checkpoints, workdir, signals and writers are the loop's parts: each stands alone (errors and the layers
  below), so the loop reads top to bottom over them and never the other way round."""
  graph = _graph("jaxtricks")
  parts = {f"jaxtricks.{m}" for m in ("checkpoints", "workdir", "signals", "writers")}
  assert parts <= set(graph)
  for m in parts:
    assert not graph[m] & (parts | {"jaxtricks.loop", "jaxtricks.harness", "jaxtricks.cli"}), (m, graph[m])
  assert parts - {"jaxtricks.writers"} <= graph["jaxtricks.loop"]


def _long_functions(folder: Path) -> list[str]:
  """`path:line name (n lines)` of each function (or method) in `folder` over MAX_FUNCTION_LINES lines."""
  found = []
  for path in sorted(folder.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          found.append(f"{path.relative_to(folder.parent)}:{node.lineno} {node.name} ({lines} lines)")
  return found


@pytest.mark.parametrize("folder", ["jaxtricks", "train"])
def test_no_function_over_60_lines(folder):
  long = _long_functions(REPO / folder)
  assert not long, f"split these into functions of at most {MAX_FUNCTION_LINES} lines: {long}"


def test_the_length_check_sees_a_long_function(tmp_path):
  body = lambda n, indent: "".join(f"{indent}x{i} = {i}\n" for i in range(n))
  (tmp_path / "pkg").mkdir()
  (tmp_path / "pkg" / "m.py").write_text(f"def fits():\n{body(59, '  ')}\n\nclass C:\n  def long(self):\n"
                                         f"{body(60, '    ')}")
  assert _long_functions(tmp_path / "pkg") == ["pkg/m.py:64 long (61 lines)"]   # 60 lines pass, 61 do not


def test_library_never_imports_programs_or_benchmarks():
  for m, path in _modules(REPO / "jaxtricks", "jaxtricks").items():
    text = path.read_text()
    assert "from train" not in text and "import train" not in text and "benchmarks" not in _imports(
        path, {"benchmarks"}), m


def test_no_program_imports_another_program():
  programs = _modules(REPO / "train", "train")
  for m, path in programs.items():
    assert not _imports(path, set(programs) - {m, "train"}), m


def test_benchmarks_import_no_program():
  """Benchmarks use the library; a study that trains runs a program's command line in a process of its own
  (benchmarks.studies.common.train)."""
  programs = set(_modules(REPO / "train", "train"))
  for m, path in _modules(REPO / "benchmarks", "benchmarks").items():
    assert not _imports(path, programs | {"train"}), m


# benchmarks/ by kind: what each kind's modules may import of benchmarks/ (besides themselves)
BENCHMARK_KINDS = {
    "benchmarks.common": set(),
    "benchmarks.speed": {"benchmarks.common", "benchmarks.speed"},
    "benchmarks.studies.common": {"benchmarks.common"},
    "benchmarks.studies": {"benchmarks.common", "benchmarks.studies.common"},   # no study imports another study
    "benchmarks.tools": {"benchmarks.common", "benchmarks.studies.common", "benchmarks.tools"},
}


def _kind(module: str) -> str | None:
  """The BENCHMARK_KINDS entry of a module of benchmarks/ (the longest prefix), None for one outside every kind."""
  kinds = [k for k in BENCHMARK_KINDS if module == k or module.startswith(k + ".")]
  return max(kinds, key=len) if kinds else None


def test_benchmarks_are_filed_by_kind_and_import_only_what_their_kind_may():
  """benchmarks/ holds speed benchmarks (speed/), studies (studies/<technique>/, sharing studies/common.py only),
  tools (tools/) and the shared helpers (common.py); a speed benchmark imports no study or tool, a study imports no
  other study, a speed benchmark or a tool."""
  graph = _graph("benchmarks")
  loose = [m for m in graph if m != "benchmarks" and _kind(m) is None and not m.endswith(("speed", "studies", "tools"))]
  assert not loose, f"file these under speed/, studies/<technique>/ or tools/: {loose}"
  assert [m for m in graph if m.startswith("benchmarks.studies.") and m.count(".") == 3], "no study found"
  for m, deps in graph.items():
    kind = _kind(m)
    allowed = BENCHMARK_KINDS.get(kind, set()) if kind else set()
    bad = [d for d in deps - {"benchmarks"} if not any(d == a or d.startswith(a + ".") for a in allowed)]
    if kind == "benchmarks.studies":   # its own module only, never another study
      bad = [d for d in bad if d != m]
    assert not bad, (m, bad)


def test_the_benchmark_kind_rule_sees_a_study_importing_another(tmp_path, monkeypatch):
  """The rule can fail: a study that imports another study is reported."""
  for folder in ("benchmarks", "benchmarks/studies", "benchmarks/studies/a", "benchmarks/studies/b"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "__init__.py").write_text("")
  (tmp_path / "benchmarks" / "common.py").write_text("")
  (tmp_path / "benchmarks" / "studies" / "a" / "x.py").write_text("from benchmarks.common import table\n")
  (tmp_path / "benchmarks" / "studies" / "b" / "y.py").write_text("from benchmarks.studies.a.x import table\n")
  monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
  with pytest.raises(AssertionError, match="benchmarks.studies.b.y"):
    test_benchmarks_are_filed_by_kind_and_import_only_what_their_kind_may()


def _strings_outside_docstrings(path: Path):
  tree = ast.parse(path.read_text())
  docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
      yield node.value


def test_library_messages_name_no_flags():
  """Flags are the programs' words: library errors name settings (`{data_dir}`), cli renders them as flags."""
  import re
  flag = re.compile(r"(^|[\s(`'\"])--[a-z][a-z-]+")
  for m, path in _modules(REPO / "jaxtricks", "jaxtricks").items():
    if m != "jaxtricks.cli":
      bad = [v for v in _strings_outside_docstrings(path) if flag.search(v) and "--xla" not in v]
      assert not bad, (m, bad)
  assert list(_strings_outside_docstrings(REPO / "train" / "classify.py"))   # the reader finds strings at all


@pytest.mark.parametrize("modules", ["jaxtricks.ebm, jaxtricks.gan, jaxtricks.losses, jaxtricks.langevin"])
def test_techniques_import_without_the_harness(modules):
  """A fresh interpreter that imports the techniques has not loaded orbax, tqdm, tensorboardX or jaxtricks.cli."""
  code = (f"import sys; import {modules}; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('orbax', 'tqdm', 'tensorboardX') "
          "or m in ('jaxtricks.cli', 'jaxtricks.loop', 'jaxtricks.harness', 'jaxtricks.checkpoints')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]", out.stdout


def test_the_repository_cites_only_what_a_cloner_has():
  """No tracked file points at files outside the repository (the project's spec and style notes live outside
  it): `docs/techniques.md` holds the techniques. README may name the shared data folder once, as an example of a
  data folder; .ci/run reads the data beside CI's clone. Every anchor of docs/techniques.md that a file cites exists."""
  import re
  files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
  assert "docs/techniques.md" in files
  doc = (REPO / "docs" / "techniques.md").read_text()
  anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', doc))
  assert {"margin", "gan", "ebm", "mobilenet", "exact", "xla-cpu-loops"} <= anchors, anchors
  cited, shared_in_readme = set(), 0
  for f in files:
    path = REPO / f
    if f.startswith("benchmarks/results/") or path.suffix not in (".py", ".md", ".toml", ".sh", "") or f == ".ci/run":
      continue
    text = path.read_text(errors="replace")
    for word in ("SPEC" + ".md", "STYLE" + ".md", "seeds" + "/0"):   # spelled in two halves: this file is tracked
      assert word not in text, f"{f} mentions {word}"
    shared = text.count("../" + "shared")
    if f == "README.md":
      shared_in_readme = shared
    else:
      assert not shared, f"{f} mentions the folder beside the repository"
    cited |= {(f, a) for a in re.findall(r"techniques\.md#([a-z0-9-]+)", text)}
  assert shared_in_readme <= 1, shared_in_readme
  missing = {(f, a) for f, a in cited if a not in anchors}
  assert not missing, f"cited anchors that docs/techniques.md lacks: {missing}"
  assert len(cited) >= 10   # the code does cite it
