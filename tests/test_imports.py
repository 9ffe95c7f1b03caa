"""The package's import graph: every project import at the top of its file, no cycles, and every module
importable alone."""
import ast
import importlib.util
import os
import subprocess
import sys

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "code" / "pixelface"
# Deferred imports of optional third-party packages are fine; deferred project imports are not, except
# these (module, imported module), each with its reason:
DEFERRED_PROJECT_IMPORTS_ALLOWED = {
    ("__init__", "editing.api"): "`import pixelface` stays light; PixelFace loads torch and the networks on first use",
    ("commands.editor", "editing.editor_app"): "gradio is optional: without it the editor says how to install it",
}


def module_name(path) -> str:
    """'config', 'commands.train', 'commands' for a subpackage's __init__.py; '__init__' for the package's."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def project_imports(tree: ast.Module, package: list[str]):
    """(dotted project name, at top level?) for each import of a pixelface module or name in `tree` (a file
    of subpackage `package`, [] for the top), relative to pixelface: 'config.load_config', 'cli'."""
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - (node.level - 1)] + (node.module or "").split(".")
        elif (node.module or "").split(".")[0] == "pixelface":
            base = node.module.split(".")[1:]
        else:
            continue
        for alias in node.names:
            yield ".".join(part for part in [*base, alias.name] if part), id(node) in top


def owning_module(name: str, modules) -> str | None:
    """The module `name` lives in: its longest dotted prefix that is a module ('config.load_config' -> 'config')."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """{module: project modules it imports}, and the deferred imports not allowed. Subpackages included."""
    paths = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph, deferred = {}, []
    for module, path in paths.items():
        graph[module] = set()
        package = list(path.relative_to(PACKAGE).parent.parts)
        for name, at_top in project_imports(ast.parse(path.read_text()), package):
            target = owning_module(name, paths)
            if target is None or target == module:
                continue
            graph[module].add(target)
            if not at_top and (module, target) not in DEFERRED_PROJECT_IMPORTS_ALLOWED:
                deferred.append(f"{module} -> {target}")
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
    assert {"networks.generator", "training.trainer", "evaluation.metrics", "editing.manipulation", "core.cli",
            "core.files", "commands.train"} <= set(graph)
    assert "evaluation.registry" in graph["evaluation.metrics"]              # the graph sees real edges
    assert "training.trainer" in graph["commands.train"]                     # ... across folders too
    assert not deferred, f"project imports inside functions: {deferred}"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


# The package's layers, bottom first: one folder each (README "What is where"). A module imports only from its
# own folder or the folders below it; nothing but the package's __init__ lives outside a folder.
LAYERS = ["core", "data", "networks", "evaluation", "training", "editing", "commands"]


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a module's folder ('data.synthface.render' -> 'data'); the package's own __init__ sits
    on top (it re-exports the API)."""
    if module == "__init__":
        return len(LAYERS)
    folder = module.split(".")[0]
    return LAYERS.index(folder) if folder in LAYERS and "." in module or module in LAYERS else None


def test_every_module_sits_in_a_layer_folder_and_imports_only_downward():
    graph, _ = import_graph()
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, f"modules outside the layer folders {LAYERS}: {unplaced}"
    name = lambda i: LAYERS[i] if i < len(LAYERS) else "pixelface/__init__"
    upward = [f"{m} ({name(layer_of(m))}) -> {t} ({name(layer_of(t))})"
              for m, targets in sorted(graph.items()) for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, f"imports from a higher layer: {upward}"


def test_layer_of_places_folders_and_rejects_loose_modules():
    assert layer_of("core.config") == 0 and layer_of("data.synthface.render") == 1
    assert layer_of("commands") == LAYERS.index("commands")
    assert layer_of("trainer") is None                 # a module outside every folder
    assert layer_of("__init__") == len(LAYERS)


def private_imports() -> list[str]:
    """'module imports name from other' for every `from X import _name` of a private name across modules."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        package = list(path.relative_to(PACKAGE).parent.parts)
        for name, _ in project_imports(ast.parse(path.read_text()), package):
            if name.rsplit(".", 1)[-1].startswith("_") and not name.endswith("__"):
                found.append(f"{module_name(path)} imports {name}")
    return found


def test_no_module_imports_a_private_name_of_another():
    assert not private_imports(), private_imports()


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


# Modules that need an optional dependency (requirements-editor.txt) to import at all.
OPTIONAL_DEPENDENCY = {"editing.editor_app": "gradio"}

IMPORT_EACH_ALONE = r"""
import importlib, importlib.util, os, sys
import numpy, PIL.Image, torch, torchvision, open_clip, yaml, scipy.linalg, nltk, safetensors, tqdm, easydict
import torch.utils.tensorboard  # third-party start-up, paid once for all children
if importlib.util.find_spec("gradio"):
    import gradio
modules = sys.argv[1:]
failed = []
for name in modules:
    pid = os.fork()
    if pid == 0:  # a child with no project module imported yet: `name` is imported alone
        try:
            importlib.import_module(name)
        except BaseException as e:
            print(f"{name}: {type(e).__name__}: {e}", flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("FAILED", *failed)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """An import cycle that the static graph cannot see (e.g. through a re-export) fails here: each module is
    the first project module its own forked child imports."""
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        dependency = OPTIONAL_DEPENDENCY.get(name)
        if dependency and importlib.util.find_spec(dependency) is None:
            continue
        modules.append("pixelface" if name == "__init__" else f"pixelface.{name}")
    assert "pixelface.networks.generation" in modules and "pixelface.commands.train" in modules
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH_ALONE, *modules], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
