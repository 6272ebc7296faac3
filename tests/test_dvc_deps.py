"""dvc.yaml: every stage depends on every project module its command imports, and on no other.

A stage's code is the transitive import closure of its `python -m stages.<mod>` module, restricted to
the project's own packages (reid, stages), read statically with `ast`: module-level and lazy
function-level imports alike, a package's `__init__.py` included, `if TYPE_CHECKING:` blocks left
out (they never run). A module missing from `deps:` is a change DVC would not re-run the stage for.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reid", "stages")


def module_file(name: str) -> Path | None:
    """The project file that defines module `name` (a package's __init__.py), or None if not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (their `else:` still runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(path: Path, module: str) -> set[str]:
    """Dotted names of the modules that `module` (defined in `path`) may import at run time."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # `from pkg import name` imports pkg.name when that is a submodule
            names.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}"))
    return {parent for name in names for parent in _with_parents(name)}


def import_closure(module: str) -> set[Path]:
    """The project files that running `python -m <module>` may execute, relative to the repo root."""
    seen: set[str] = set()
    todo = [*_with_parents(module), f"{module}.__main__"]  # -m on a package runs its __main__.py
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        files.add(path.relative_to(ROOT))
        todo.extend(imported_modules(path, name) - seen)
    return files


def stage_module(cmd: str) -> str:
    """`python -m stages.train baseline` -> stages.train."""
    words = cmd.split()
    if words[:2] != ["python", "-m"] or len(words) < 3:
        raise ValueError(f"dvc.yaml: stage command {cmd!r} is not `python -m <module> ...`")
    return words[2]


def resolved_stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (module, declared deps), foreach items and ${...} resolved by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {stage.addressing: (stage_module(stage.cmd), [dep.def_path for dep in stage.deps])
                for stage in repo.index.stages}


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def covers(dep: str, path: Path) -> bool:
    """A file dep names the file; a folder dep contains it."""
    return path == Path(dep) or Path(dep) in path.parents


STAGES = resolved_stages()


def test_every_stage_runs_a_project_module():
    assert STAGES
    for name, (module, _) in STAGES.items():
        assert module_file(module) is not None, f"{name}: {module} is not a module of this project"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_every_module_it_imports(name):
    module, deps = STAGES[name]
    missing = sorted(str(path) for path in import_closure(module)
                     if not any(covers(dep, path) for dep in deps))
    assert not missing, f"dvc.yaml stage {name}: imported by {module} but not in deps: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_no_code_it_does_not_import(name):
    module, deps = STAGES[name]
    closure = import_closure(module)
    extra = sorted(dep for dep in deps if is_code(dep) and not any(covers(dep, path) for path in closure))
    assert not extra, f"dvc.yaml stage {name}: deps never imported by {module}: {extra}"


def test_code_folder_deps_leave_pycache_out():
    """A folder dep hashes every file in it, __pycache__/*.pyc too, unless .dvcignore drops them."""
    from dvc.repo import Repo

    folders = sorted({dep for _, deps in STAGES.values() for dep in deps if is_code(dep) and (ROOT / dep).is_dir()})
    with Repo(str(ROOT)) as repo:
        hashed = [f for f in folders if not repo.dvcignore.is_ignored(
            repo.fs, repo.fs.join(repo.root_dir, f, "__pycache__", "m.cpython-310.pyc"))]
    assert not hashed, (f"dvc.yaml: folder deps {hashed} would hash their __pycache__/: list the files "
                        f"instead, or add __pycache__/ to .dvcignore")


def test_closure_follows_lazy_and_submodule_imports(tmp_path, monkeypatch):
    """The reader itself: function-level imports, `from pkg import submodule`, __init__, TYPE_CHECKING."""
    pkg = tmp_path / "reid"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("")
    (pkg / "sub" / "__main__.py").write_text("")
    (pkg / "typed.py").write_text("")
    (pkg / "lazy.py").write_text("from reid import sub\nfrom .sub import leaf\n")
    (pkg / "main.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import reid.typed\n"
        "def run():\n    import reid.lazy\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert import_closure("reid.main") == {Path(p) for p in (
        "reid/__init__.py", "reid/main.py", "reid/lazy.py", "reid/sub/__init__.py", "reid/sub/leaf.py")}
    assert Path("reid/sub/__main__.py") in import_closure("reid.sub")  # python -m reid.sub
