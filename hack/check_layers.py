"""Fail when a module of the operator imports across the layers it must not cross.

Run by ``make lint``. The rules (every import statement of every module, including
imports inside functions; the module a ``from X import Y`` names is X):

1. **Pure code stays pure.** ``cachetier.api``, ``render``, ``rollout``, ``topology``
   and ``names`` import nothing but the standard library, pydantic, PyYAML and each
   other — no kopf, no Kubernetes client, no redis-py, no metrics, and no other
   ``cachetier`` module (so purity holds transitively).
2. **One adapter per outside world.** Only ``cachetier.kube`` imports the Kubernetes
   client (``kubernetes``, ``urllib3``); only ``cachetier.redis`` imports redis-py;
   only ``cachetier.handlers`` and ``cachetier.main`` import kopf.
3. **The middle layer speaks through ports.** Nothing in ``cachetier.reconcile``
   imports the adapters (``cachetier.kube``, ``cachetier.redis``): it is handed
   implementations of ``cachetier.ports`` (the API, Redis administration, the prober,
   a clock, an event sink), which ``handlers`` wires up.
4. **The decision is pure.** ``reconcile.decide``, ``observed``, ``conditions``,
   ``injection``, ``consumer_plan``, ``volumes`` and every ``reconcile.modes`` module import only
   the pure layers, ``cachetier.ports`` and each other (no metrics, no I/O half of
   the reconcile, no third-party package but pydantic and PyYAML).
5. **No reaching into private names.** A module imports another package's
   underscore-named modules or names only from inside that package, and reads an
   underscore-named attribute only of ``self``/``cls`` (not of another object or of
   an imported module).

Prints one line per violation (``path:line: rule: detail``) and exits 1 if any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "operator"
PACKAGE = "cachetier"
PURE = {"api", "render", "rollout", "topology", "names", "ports"}
PURE_RECONCILE = {
    "cachetier.reconcile.decide",
    "cachetier.reconcile.observed",
    "cachetier.reconcile.conditions",
    "cachetier.reconcile.injection",
    "cachetier.reconcile.consumer_plan",
    "cachetier.reconcile.volumes",
    "cachetier.reconcile.rotation",
}
"""The pure half of the reconcile (besides every module of ``cachetier.reconcile.modes``)."""
PORTS_ONLY = {"reconcile"}
"""Layers that reach the outside only through ``cachetier.ports``."""
PURE_THIRD_PARTY = {"pydantic", "pydantic_core", "yaml"}
ADAPTERS = {
    "kubernetes": {"kube"},
    "urllib3": {"kube"},
    "redis": {"redis"},
    "kopf": {"handlers", "main"},
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, current: str, is_package: bool) -> Iterator[tuple[int, str, str]]:
    """(line, imported module, imported name or "") of every import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = current.split(".")
                keep = len(anchor) - node.level + (1 if is_package else 0)
                base = ".".join([*anchor[:keep], *([base] if base else [])])
            for alias in node.names:
                yield node.lineno, base, alias.name


def private_attributes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted text) of every ``x._name`` where x is not ``self`` or ``cls``."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        yield node.lineno, f"{ast.unparse(owner)}.{attr}"


def top(module: str) -> str:
    """``cachetier.render._meta`` -> ``render``; ``cachetier.names`` -> ``names``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else ""


def pure_reconcile(module: str) -> bool:
    return (
        module in PURE_RECONCILE
        or module == "cachetier.reconcile.modes"
        or (module.startswith("cachetier.reconcile.modes."))
    )


def check(root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        current = module_name(path, root)
        layer = top(current)
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(root.parent)
        for line, module, name in imports(tree, current, path.name == "__init__.py"):
            first = module.split(".")[0]
            if first == PACKAGE:
                target = top(module) if module != PACKAGE else name
                if layer in PORTS_ONLY and target in ("kube", "redis"):
                    problems.append(
                        f"{where}:{line}: ports-only: {current} imports {module}"
                        " (the middle layer uses cachetier.ports; handlers wire the adapters)"
                    )
                if pure_reconcile(current) and target not in PURE:
                    imported = f"{module}.{name}" if name else module
                    if not (pure_reconcile(imported) or pure_reconcile(module)):
                        problems.append(
                            f"{where}:{line}: pure-imports-impure: {current} imports {imported}"
                        )
                if layer in PURE and target and target not in PURE:
                    problems.append(
                        f"{where}:{line}: pure-imports-impure: {current} imports {module}"
                    )
                private = [p for p in module.split(".")[1:] if p.startswith("_")]
                if name.startswith("_") and not name.startswith("__"):
                    private.append(name)
                if private and target and target != layer:
                    problems.append(
                        f"{where}:{line}: private-name: {current} imports"
                        f" {module}{'.' + name if name else ''} from another package"
                    )
                continue
            allowed = ADAPTERS.get(first)
            if allowed is not None and layer not in allowed:
                problems.append(
                    f"{where}:{line}: adapter-only: {current} imports {first}"
                    f" (only {', '.join(sorted('cachetier.' + a for a in allowed))} may)"
                )
            elif (
                (layer in PURE or pure_reconcile(current))
                and first not in PURE_THIRD_PARTY
                and first not in sys.stdlib_module_names
                and first != "__future__"
            ):
                problems.append(f"{where}:{line}: pure-imports-impure: {current} imports {first}")
        for line, text in private_attributes(tree):
            problems.append(f"{where}:{line}: private-name: {current} reads {text}")
    return problems


def import_cycles(root: Path, package: str) -> list[str]:
    """Import cycles among the modules of ``package`` under ``root`` (``TYPE_CHECKING``
    imports count: a cycle hidden behind one is still a tangle)."""
    paths = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for current, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        for _, module, name in imports(tree, current, path.name == "__init__.py"):
            target = f"{module}.{name}" if f"{module}.{name}" in paths else module
            if target in paths and target != current and not current.startswith(target + "."):
                graph[current].add(target)
    problems: list[str] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                loop = [*stack[stack.index(nxt) :], nxt]
                problems.append(f"{paths[node]}: import-cycle: {' -> '.join(loop)}")
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return problems


DEVTOOLS = Path(__file__).resolve().parents[1] / "devtools"


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    problems = check(root)
    if len(sys.argv) <= 1:
        problems += import_cycles(ROOT, PACKAGE) + import_cycles(DEVTOOLS, "ctdev")
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layer violation(s); see hack/check_layers.py for the rules")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
