"""The layout rules of STYLE.md: small sorted public surfaces and one-way imports.

Each package root re-exports a sorted, complete ``__all__``; imports flow
``models -> ingest``, ``streams -> {ingest, models}``, ``enforcement -> ingest``
and nowhere else; only ``streams/app.py`` imports faust; ``import ingest``
does not load Kafka.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "models", "streams", "enforcement")
ALLOWED_EDGES = {("models", "ingest"), ("streams", "ingest"), ("streams", "models"), ("enforcement", "ingest")}

# STYLE: "ingest/, streams/, models/, enforcement/ re-export a short, sorted __all__
# from __init__.py". streams/__init__.py is empty and enforcement/ has no __init__.py.
_MISSING_ROOT: dict[str, str] = {}


def _root_params() -> list[object]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=_MISSING_ROOT[name])) if name in _MISSING_ROOT else name
        for name in PACKAGES
    ]


def _package_all(name: str) -> list[str]:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name}/__init__.py defines no __all__"
    return list(module.__all__)


def isort_key(name: str) -> tuple[int, str]:
    """The order ``ingest`` and ``models`` use: ruff RUF022's isort-style sort.

    SCREAMING_CASE constants first, then CamelCase, then everything else, each
    group in ASCII order. Plain ``sorted()`` is *not* this order: it puts
    ``"DeadLetter"`` before ``"FINDINGS"`` (``"D" < "F"``).
    """
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def test_isort_key_is_not_plain_sorted_and_rejects_disorder() -> None:
    assert sorted(["FINDINGS", "DeadLetter", "decode_message"], key=isort_key) == ["FINDINGS", "DeadLetter", "decode_message"]
    assert sorted(["FINDINGS", "DeadLetter"]) == ["DeadLetter", "FINDINGS"]
    assert sorted(["Verdict", "Source"], key=isort_key) != ["Verdict", "Source"]


@pytest.mark.parametrize("package", _root_params())
def test_package_all_is_sorted(package: str) -> None:
    names = _package_all(package)
    assert names, f"{package}.__all__ is empty"
    assert names == sorted(names, key=isort_key), f"{package}.__all__ is not in (isort-style) sorted order"
    assert len(names) == len(set(names)), f"{package}.__all__ repeats a name"


@pytest.mark.parametrize("package", _root_params())
def test_package_all_is_complete(package: str) -> None:
    module = importlib.import_module(package)
    names = _package_all(package)
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{package}.__all__ names that do not resolve: {missing}"
    public = {
        n for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public - set(names) == set(), f"public names of {package} missing from __all__"


@pytest.mark.parametrize("package", _root_params())
def test_package_root_has_a_docstring(package: str) -> None:
    module = importlib.import_module(package)
    assert (module.__doc__ or "").strip(), f"{package} has no package docstring stating its contract"


# ------------------------------------------------------------------ imports


def _python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file (including inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add(path.relative_to(ROOT).parts[0])  # a relative import stays inside the package
    return found


def _all_files() -> list[tuple[str, Path]]:
    return [(pkg, path) for pkg in PACKAGES for path in _python_files(pkg)]


def test_every_package_has_python_files() -> None:
    for pkg in PACKAGES:
        assert _python_files(pkg), f"no .py files under {pkg}/"


@pytest.mark.parametrize(("package", "path"), _all_files(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_imports_flow_one_way(package: str, path: Path) -> None:
    bad = []
    for module in _imported_modules(path):
        top = module.split(".")[0]
        if top in PACKAGES and top != package and (package, top) not in ALLOWED_EDGES:
            bad.append(f"{package} -> {top} ({module})")
        if top == "deploy":
            bad.append(f"{package} -> deploy ({module})")
    assert not bad, f"{path.relative_to(ROOT)} has forbidden import edges: {bad}"


def test_only_streams_app_imports_faust() -> None:
    importers = sorted(
        str(path.relative_to(ROOT)) for _, path in _all_files()
        if any(m.split(".")[0] in {"faust", "mode"} for m in _imported_modules(path))
    )
    assert importers == ["streams/app.py"]


def test_adapters_import_no_collectors_and_collectors_no_enforcement() -> None:
    adapters = [p for p in _python_files("enforcement") if "adapters" in p.parts]
    collectors = [p for p in _python_files("ingest") if "collectors" in p.parts]
    assert adapters and collectors
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in adapters for m in _imported_modules(p) if m.startswith("ingest.collectors")]
    bad += [f"{p.relative_to(ROOT)}: {m}" for p in collectors for m in _imported_modules(p) if m.split(".")[0] == "enforcement"]
    assert not bad, bad


def test_only_podwatch_imports_the_kubernetes_client() -> None:
    importers = sorted(str(path.relative_to(ROOT)) for _, path in _all_files()
                       if any(m.split(".")[0] == "kubernetes" for m in _imported_modules(path)))
    assert importers == ["ingest/podwatch.py"]


#: the wire contract: ingest/schema.py and the record modules it is made of (findings, the record base)
CONTRACT = ("schema.py", "finding.py", "record.py")


@pytest.mark.parametrize("name", CONTRACT)
def test_the_wire_contract_imports_only_stdlib_pydantic_and_itself(name: str) -> None:
    allowed = {"__future__", "typing", "pydantic"}
    imported = _imported_modules(ROOT / "ingest" / name)
    inside = {m for m in imported if m.startswith("ingest.")}
    assert inside <= {f"ingest.{n.removesuffix('.py')}" for n in CONTRACT}
    tops = {m.split(".")[0] for m in imported - inside}
    assert tops <= allowed | set(sys.stdlib_module_names)
    assert "pydantic" in tops


def test_the_import_checker_sees_nested_imports(tmp_path: Path) -> None:
    """Guards the guard: imports inside functions count as edges too."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from models import REGISTRY\n    import faust.types\n")
    assert _imported_modules(sample) == {"models", "faust.types"}


def _fresh_interpreter(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    return result.stdout.strip()


def test_import_ingest_does_not_load_kafka_or_faust() -> None:
    out = _fresh_interpreter("import ingest, sys; print('kafka' in sys.modules, 'faust' in sys.modules, 'aiokafka' in sys.modules)")
    assert out == "False False False"


def test_enforcement_decision_path_loads_no_detection_code_and_no_kafka() -> None:
    """The data plane never loads detection code (Envoy, Cilium): shim imports stay off models and Kafka."""
    code = "import enforcement.shim, enforcement.decision, sys; print(sorted(m for m in ('models', 'streams', 'kafka', 'faust') if m in sys.modules))"
    assert _fresh_interpreter(code) == "[]"


def test_every_public_name_of_the_roots_has_a_docstring() -> None:
    undocumented = []
    for package in ("ingest", "models"):
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if (inspect.isclass(value) or inspect.isfunction(value)) and not (value.__doc__ or "").strip():
                undocumented.append(f"{package}.{name}")
    assert not undocumented
