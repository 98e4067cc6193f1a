"""The layering of docs/architecture.md holds in the code.

The doc's table "layer | may import" is read here and every `import` in src/modelpod (at module level
or inside a function) is checked against it, so the doc and the code cannot drift apart: a new package
needs a row, and an import the table does not allow fails with the file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "modelpod"
DOC = ROOT / "docs" / "architecture.md"
# the package's own root (`__init__`, `_lazy`, `__version__`) is open to every layer
ROOT_LAYER = "modelpod"


def layer_table() -> dict[str, set[str]]:
    """{layer: layers it may import} from the doc's table (rows like "| `spec` | `signature`, `errors` |")."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("| layer | may import |", 1)[1].split("\n\n", 1)[0]
    table = {}
    for row in section.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        table[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return table


def layer_of(module: str, layers: set[str]) -> str:
    """The layer a module belongs to: the longest layer of the table that is the module or a package
    above it (`modelpod.deploy.render.pod` -> `deploy.render`; `modelpod.server.app` -> `server`)."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in ("__init__", "_lazy", "__version__", "__main__"):
        return ROOT_LAYER
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in layers:
            return candidate
    return parts[0]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a modelpod module in `path`, relative ones resolved."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from modelpod import x` and `from modelpod.deploy import render` name modules too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "modelpod"]


def source_files() -> list[tuple[Path, str]]:
    return [(path, ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)) for path in
            sorted(PACKAGE.rglob("*.py"))]  # fmt: skip


def layer_imports() -> list[tuple[Path, int, str, str, str]]:
    """(file, line, its layer, imported name, the name's layer) for every modelpod import in the package."""
    table = layer_table()
    found = []
    for path, module in source_files():
        source = layer_of(module, set(table))
        for line, name in imports(path):
            found.append((path, line, source, name, layer_of(name, set(table))))
    return found


def test_every_import_is_one_the_layer_table_allows():
    table = layer_table()
    forbidden = []
    for path, line, source, name, target in layer_imports():
        if source == ROOT_LAYER:
            continue  # the root resolves the public names lazily, from any layer
        assert source in table, f"{path} is in layer {source!r}, which docs/architecture.md's table lacks"
        if target not in (source, ROOT_LAYER) and target not in table[source]:
            forbidden.append(f"{path.relative_to(ROOT)}:{line}: {source} imports {name}")
    assert forbidden == [], "imports docs/architecture.md's layer table forbids:\n" + "\n".join(forbidden)


def test_every_allowance_of_the_table_is_used():
    """A layer the table lets another import, but which none of its modules imports, is a stale rule."""
    used = {(source, target) for _, _, source, _, target in layer_imports()}
    unused = [f"{layer} -> {allowed}" for layer, allowances in layer_table().items() for allowed in
              sorted(allowances) if (layer, allowed) not in used]  # fmt: skip
    assert unused == [], "docs/architecture.md allows imports no module makes:\n" + "\n".join(unused)


def test_no_modules_import_each_other_in_a_circle():
    """Module-level and function-level imports alike: a cycle, even one hidden in a function, ties two
    modules together so that neither can be read or tested alone."""
    modules = {module.removesuffix(".__init__") for _, module in source_files()}
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for path, module in source_files():
        for _, name in imports(path):
            # `from modelpod.server.core import gate` names a module; `from modelpod.x import f` a member
            target = name if name in modules else name.rsplit(".", 1)[0]
            if target in modules and target != module.removesuffix(".__init__"):
                graph[module.removesuffix(".__init__")].add(target)
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == [], f"modules that import each other, directly or through others: {cycles}"


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of `graph` (node -> nodes it points to)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_deploy_takes_only_the_label_keys_from_render():
    """The doc's rule below the table: deploy imports render's labels module, never a renderer."""
    from_render = [
        (path.name, line, name)
        for path in sorted((PACKAGE / "deploy").glob("*.py"))
        for line, name in imports(path)
        if layer_of(name, set(layer_table())) == "deploy.render"
    ]
    assert from_render, "deploy no longer imports the label keys: update docs/architecture.md"
    for file, line, name in from_render:
        assert name.startswith("modelpod.deploy.render.labels."), f"deploy/{file}:{line} imports {name}"


def test_the_table_names_only_layers_that_exist():
    table = layer_table()
    assert {"errors", "specfile", "server", "server.scheduling", "cli"} <= set(
        table
    )  # the table was read, not an empty match
    for layer, allowed in table.items():
        for name in {layer, *allowed}:
            path = PACKAGE.joinpath(*name.split("."))
            assert path.is_dir() or path.with_suffix(".py").is_file(), f"{name!r} in the table is no module"


def test_nothing_in_the_package_imports_benchmarks_or_tests():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("benchmarks", "tests") for n in names), path


def test_the_error_tree_names_every_error_class():
    documented = ast.get_docstring(ast.parse((PACKAGE / "errors.py").read_text(encoding="utf-8"))) or ""
    errors = {"ModelpodError"}
    classes = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.append((node.name, {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}))
    grown = True
    while grown:  # every class that derives, at any depth, from ModelpodError
        before = len(errors)
        errors |= {name for name, bases in classes if bases & errors}
        grown = len(errors) > before
    missing = sorted(name for name in errors if not re.search(rf"\b{name}\b", documented))
    assert missing == [], f"errors.py's tree leaves out {missing}"
