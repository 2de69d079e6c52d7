"""The package layout shows the architecture, and stays that way.

Commands sit at the top of `kerasft/`, the library in packages by concern, each
package importing only those below it:

    _compat, errors, progress < config < tasks < peft < models < data < serving < report < training < commands

A package's own `cli`/`__main__` module (`python -m kerasft.report`) is a command too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kerasft"
LAYERS = ["config", "tasks", "peft", "models", "data", "serving", "report", "training"]
COMMANDS = {"train", "tune", "export", "predict", "distill", "pretrain", "cli", "__main__"}
FOUNDATION = {"_compat", "errors", "progress", "__init__"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in FOUNDATION:
        return 0
    if parts[1] in COMMANDS or parts[-1] in ("cli", "__main__"):
        return len(LAYERS) + 1
    return LAYERS.index(parts[1]) + 1


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kerasft"):
            if node.module == "kerasft":
                found += [(node.lineno, f"kerasft.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("kerasft")]
    return found


def test_the_top_level_holds_commands_and_packages_only():
    entries = {
        p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert entries == COMMANDS | FOUNDATION | set(LAYERS)


def test_no_import_runs_up_a_layer():
    upward = [
        f"{path.relative_to(PACKAGE)}:{line} imports {target}"
        for path, module in _modules()
        for line, target in _imports(path)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_import_cycle_between_modules():
    modules = dict(_modules())
    names = set(modules.values())
    graph = {
        module: {t for _, t in _imports(path) if t in names and t != module}
        for path, module in modules.items()
    }
    # A package importing its own submodules (re-exports) is not a cycle.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not t.startswith(module + ".")}
    seen, stack, cycles = set(), [], []

    def visit(module):
        if module in stack:
            cycles.append(stack[stack.index(module) :] + [module])
            return
        if module in seen:
            return
        seen.add(module)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        stack.pop()

    for module in sorted(graph):
        visit(module)
    assert cycles == []


def test_no_module_over_600_lines_and_no_function_over_60():
    long = []
    for path, _ in _modules():
        text = path.read_text()
        if len(text.splitlines()) > 600:
            long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length}")
    assert long == []
