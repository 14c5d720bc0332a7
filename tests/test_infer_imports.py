"""`hydradet/infer/` has no import cycle: a Result does not need its drawer (draw.py takes plain arrays), and
reading a video does not need a Model (video.py reads and writes frames; the predict and track loops are in
run.py). Checked on the source with `ast`, counting every import between infer modules: top-level ones, those
under `if TYPE_CHECKING:` and those inside functions (lazy), since a lazy import is a dependency all the same.
And each module imports on its own, in a fresh interpreter state, whichever is imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

INFER = Path(__file__).resolve().parents[1] / "hydradet" / "infer"
PACKAGE = "hydradet.infer"
MODULES = sorted(p.stem for p in INFER.glob("*.py") if p.stem != "__init__")


def infer_imports(module: str) -> dict[str, str]:
    """The infer modules `module` imports -> "top" (module level, TYPE_CHECKING blocks included) or "lazy"."""
    tree = ast.parse((INFER / f"{module}.py").read_text())
    found: dict[str, str] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            names: list[str] = []
            if isinstance(child, ast.ImportFrom) and child.module:
                if child.module == PACKAGE:  # from hydradet.infer import draw
                    names = [a.name for a in child.names]
                elif child.module.startswith(PACKAGE + "."):
                    names = [child.module.split(".")[2]]
            elif isinstance(child, ast.Import):
                names = [a.name.split(".")[2] for a in child.names if a.name.startswith(PACKAGE + ".")]
            for name in names:
                if name in MODULES and name != module and found.get(name) != "top":
                    found[name] = "lazy" if inner else "top"
            visit(child, inner)

    visit(tree, False)
    return found


def test_the_import_graph_of_infer_has_no_cycle():
    graph = {m: infer_imports(m) for m in MODULES}
    assert sum(len(e) for e in graph.values()) > 10  # the parser sees the imports at all

    # Depth-first search for a back edge, over top-level and lazy imports alike.
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                return [*path[path.index(n) :], n] if n in path else [*path, n]
            if n not in state and (found := cycle_from(n, [*path, n])):
                return found
        state[m] = 2
        return None

    for m in MODULES:
        if m not in state:
            cycle = cycle_from(m, [m])
            assert cycle is None, f"import cycle in hydradet/infer: {' -> '.join(cycle)}"


def test_results_and_draw_and_video_and_model_do_not_need_each_other():
    assert "results" not in infer_imports("draw")  # draw takes arrays and strings
    assert infer_imports("results").get("draw") == "lazy"  # only when a Result is drawn
    assert not {"model", "results", "predict", "run", "track"} & set(infer_imports("video"))  # frames only
    assert "model" not in infer_imports("sources") and "model" not in infer_imports("track")


def test_each_infer_module_imports_on_its_own():
    """One interpreter; before each import every hydradet module is forgotten, so each is imported first once."""
    script = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for m in [m for m in sys.modules if m == 'hydradet' or m.startswith('hydradet.')]:\n"
        "        del sys.modules[m]\n"
        f"    importlib.import_module('{PACKAGE}.' + name)\n"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("module", MODULES)
def test_infer_imports_are_parsed(module: str):
    infer_imports(module)  # a file the parser cannot read would fail here, by name
