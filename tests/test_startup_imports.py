"""Start-up imports: what training does not need must not be imported before training starts.

Imports are half of the start-up time (benchmarks/RESULTS.md, "Start-up"). Most of it is torch and transformers,
which training needs; note that transformers itself imports ``peft``, ``datasets`` and ``pandas`` whenever they are
installed (``transformers.training_args`` -> ``trainer_utils`` -> ``peft``; ``transformers.trainer`` ->
``datasets``), so those cannot be kept out of a training process by mmft. What mmft controls is checked here: its own
modules import optional and evaluation-only libraries inside the functions that use them, and the light entry
points (``import mmft``, the CLI's argument parsing, records and cards) import neither torch nor transformers, and
the modules that load models, adapters and data import neither transformers, ``peft`` nor ``datasets`` until used.
"""

import ast
import subprocess
import sys
from pathlib import Path

import mmft

PACKAGE = Path(mmft.__file__).parent
# Imported only where used: adapters (LoRA/QLoRA, merging, PEFT folders), Hub/Parquet loading, metrics, optional
# kernels and quantisation.
LAZY = {"peft", "datasets", "evaluate", "sacrebleu", "pandas", "bitsandbytes", "liger_kernel", "pycocoevalcap"}


def _module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, top-level package) of every import that runs when the module is imported (not inside a function, not
    under ``if TYPE_CHECKING:``)."""
    found = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.lineno, node.module.split(".")[0]))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []))
            elif isinstance(node, ast.ExceptHandler):
                visit(node.body)

    visit(tree.body)
    return found


def test_mmft_modules_import_optional_libraries_lazily():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        # Metric scripts (mmft/metrics/<name>/<name>.py and the info they share) are loaded by `evaluate` itself.
        if relative.parts[0] == "metrics" and (len(relative.parts) > 2 or relative.name == "info.py"):
            continue
        for line, package in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if package in LAZY:
                offenders.append(f"mmft/{relative}:{line}: import {package}")
    assert not offenders, "import these inside the functions that use them:\n" + "\n".join(offenders)


def test_the_lint_of_this_test_sees_module_level_imports():
    tree = ast.parse("import peft\nif TYPE_CHECKING:\n    import evaluate\ntry:\n    from datasets import x\n"
                     "except ImportError:\n    pass\ndef f():\n    import pandas\n")
    assert [package for _, package in _module_level_imports(tree)] == ["peft", "datasets"]


def test_light_entry_points_and_the_training_path_import_only_what_they_need():
    script = """
import sys
import mmft, mmft.commands.cli, mmft.data.records, mmft.data.cards
heavy = [name for name in ("torch", "transformers", "PIL") if name in sys.modules]
assert not heavy, f"import mmft / mmft.commands.cli / mmft.data.records / mmft.data.cards imported {heavy}"
import mmft.train.modeling, mmft.data.sources, mmft.hub.card, mmft.data.lengths
eager = [name for name in ("peft", "datasets", "transformers") if name in sys.modules]
assert not eager, f"mmft's model, data and hub modules imported {eager} before use"
import mmft.workflow
unneeded = ["evaluate", "sacrebleu", "bitsandbytes", "liger_kernel", "pycocoevalcap", "scipy", "mmft.hub.merge",
            "mmft.evaluation.inference", "mmft.testing", "mmft.data.shapes", "mmft.commands.datacheck",
            "mmft.commands.datashow", "mmft.evaluation.report",
            "mmft.commands.dataargs", "mmft.commands.datascan", "mmft.commands.datareport", "mmft.commands.datastream"]
loaded = [name for name in unneeded if name in sys.modules]
assert not loaded, f"import mmft.workflow imported {loaded}"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
