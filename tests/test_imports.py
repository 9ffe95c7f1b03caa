"""The package's import graph: every project import at the top of its file, and no cycles."""
import ast

from pixelface.config import REPO_ROOT

PACKAGE = REPO_ROOT / "code" / "pixelface"
# Deferred imports of optional third-party packages are fine; deferred project imports are not, except
# these (module, imported module), each with its reason:
DEFERRED_PROJECT_IMPORTS_ALLOWED = {
    ("__init__", "api"): "`import pixelface` stays light; PixelFace loads torch and the networks on first use",
}


def project_imports(tree: ast.Module):
    """(imported project module, at top level?) for each import of a pixelface module in `tree`."""
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            name = node.module or ""
        elif (node.module or "").split(".")[0] == "pixelface":
            name = node.module.removeprefix("pixelface").lstrip(".")
        else:
            continue
        for target in ([name] if name else [a.name for a in node.names]):
            yield target.split(".")[0], id(node) in top


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """{module: project modules it imports}, and the deferred imports not allowed."""
    graph, deferred = {}, []
    for path in sorted(PACKAGE.glob("*.py")):
        graph[path.stem] = set()
        for target, at_top in project_imports(ast.parse(path.read_text())):
            graph[path.stem].add(target)
            if not at_top and (path.stem, target) not in DEFERRED_PROJECT_IMPORTS_ALLOWED:
                deferred.append(f"{path.stem} -> {target}")
    return graph, deferred


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, stack + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_no_import_cycles_and_no_deferred_project_imports():
    graph, deferred = import_graph()
    assert {"generator", "trainer", "metrics", "editing", "cli", "files"} <= set(graph)
    assert "metrics" in graph["parser"] or "parser" in graph["metrics"]      # the graph sees real edges
    assert not deferred, f"project imports inside functions: {deferred}"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
