"""The repository's layers, read from the source: no import cycle in the library or the platform (imports
inside functions included; imports under ``if TYPE_CHECKING:`` are for annotations only and never run), the
layer contracts of docs/design.md section 2, and the design cited where it lives."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"diled": ROOT / "diled", "diled_platform": ROOT / "platform" / "diled_platform"}
OUTSIDE = {"jobs": ROOT / "jobs", "benchmarks": ROOT / "benchmarks", "tests": ROOT / "tests"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder.parent).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name ``path`` imports, anywhere in the file, except under ``if TYPE_CHECKING:``;
    ``from a import b`` gives ``a.b`` (a module, or a name in ``a``). Relative imports are resolved."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the two packages it imports (a name resolves to its longest module prefix)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in mods.items():
        targets = {resolve(n) for n in imported_names(path, module)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_and_ignores_annotation_only_imports(tmp_path):
    """The cycle finder on a made-up graph, and the import reader on a file with the three kinds of import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nimport x.y\nfrom . import sib\n"
                      "if TYPE_CHECKING:\n    from z import Z\n"
                      "def f():\n    from w import v\n")
    assert imported_names(source, "pkg.m") == {"typing.TYPE_CHECKING", "x.y", "pkg.sib", "w.v"}


def test_no_import_cycles_in_the_library_or_the_platform():
    found = cycles(import_graph())
    assert not found, f"import cycles (imports inside functions count): {found}"


@pytest.mark.parametrize("package,forbidden", [
    ("diled", ("diled_platform", "jobs", "benchmarks", "tests", "ray", "deepspeed")),
    ("diled_platform", ("jobs", "benchmarks", "tests")),
])
def test_layer_contracts(package, forbidden):
    """diled is the method and imports no platform, job, benchmark or test (nor Ray or DeepSpeed); the
    platform imports no job, benchmark or test."""
    bad = [f"{module} imports {name}" for module, path in modules().items() if module.split(".")[0] == package
           for name in imported_names(path, module) if name.split(".")[0] in forbidden]
    assert not bad, bad


def text_files():
    for folder in ("diled", "platform", "jobs", "benchmarks", "tests", "docs", "cluster", "scripts", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", "") \
                    and "__pycache__" not in path.parts:
                yield path
    yield from (ROOT / name for name in ("README.md", "pyproject.toml", "requirements-cpu.txt") if (ROOT / name).is_file())


def test_the_design_is_cited_where_it_lives():
    """docs/design.md is the design; nothing cites a design file outside the repository."""
    assert (ROOT / "docs" / "design.md").is_file()
    this = Path(__file__).resolve()
    bad = [str(p.relative_to(ROOT)) for p in text_files() if p.resolve() != this and "DESIGN.md" in p.read_text(errors="ignore")]
    assert not bad, f"these cite DESIGN.md, which is not in the repository (docs/design.md is): {bad}"


def test_no_issue_numbers_in_code_or_docs():
    """Code, README and docs speak of what the platform does, not of how the project was run."""
    pattern = re.compile(r"\bissue\s*#?\s*\d+", re.IGNORECASE)
    this = Path(__file__).resolve()
    bad = [f"{p.relative_to(ROOT)}: {m.group(0)!r}" for p in text_files() if p.resolve() != this
           for m in pattern.finditer(p.read_text(errors="ignore"))]
    assert not bad, bad


def test_the_platform_keeps_its_rooms():
    """The platform's modules live in folders by concern (training, serving, sweeps, comparison, datatypes);
    at its top only the config, the package files, the options data types build on, and the public
    Serve path that deployment files name (``diled_platform.serve:app_builder``)."""
    top = sorted(p.name for p in PACKAGES["diled_platform"].glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "config.py", "options.py", "serve.py"], top
    from diled_platform.datatypes import builtin_names

    assert builtin_names() == ["image", "protein", "text", "vector"]  # a helper module (_reports) is no data type


def test_no_python_file_over_450_lines():
    """A file that grows past this is doing two things: split it by concern."""
    long = {str(p.relative_to(ROOT)): n for folder in ("diled", "platform", "jobs") for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_one_writer_of_eval_json():
    """eval.json is written in one place (``datatypes._reports.write_eval``); everyone else calls it."""
    writers = [str(p.relative_to(ROOT)) for folder in ("diled", "platform", "jobs") for p in (ROOT / folder).rglob("*.py")
               if re.search(r'eval\.json"?\)?\.write_text|open\([^)]*eval\.json[^)]*"w', p.read_text())]
    assert not writers, writers
