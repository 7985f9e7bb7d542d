"""A built wheel works on its own, not only the editable checkout.

The slow tests build a wheel from a copy of the tree, install it into a fresh
venv that cannot see the checkout, and run the console script there: the data
folders (grammars/, models/, tools/) must come from inside the installed
package. The runtime dependencies are borrowed from the running venv through a
``.pth`` line rather than installed again (llama-cpp-python would compile for
minutes). The fast tests guard the packaging config that makes this work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, get_args

import pytest

from edge_agent.resources import DataKind, data_path
from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "*.gguf", "*.part",
)  # fmt: skip


def test_every_package_in_the_tree_is_listed() -> None:
    """The packages are listed by hand (find cannot see the mapped data
    folders), so a new subpackage must be added to pyproject.toml."""
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("edge_agent", "firmware_bridge")
        for init in (REPO / top).rglob("__init__.py")
    }
    missing = found - set(SETUPTOOLS["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_every_data_kind_is_mapped_into_the_package() -> None:
    mapping = SETUPTOOLS["package-dir"]
    assert mapping == {f"edge_agent._data.{kind}": kind for kind in get_args(DataKind)}
    assert set(mapping) <= set(SETUPTOOLS["packages"])


def test_a_checkout_uses_its_top_level_folders() -> None:
    for kind in get_args(DataKind):
        assert data_path(kind) == REPO / kind
        assert data_path(kind).is_dir()


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel installed and the running venv's
    site-packages (not the checkout) on its path for the dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    # A copy, so the build's build/ and *.egg-info never land in the checkout.
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _check([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)])
    [wheel] = dist.glob("edge_agent-*.whl")
    env_dir = work / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    _check([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    purelib = _check([str(python), "-c", "import sysconfig;print(sysconfig.get_path('purelib'))"])
    borrowed = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    assert str(REPO) not in borrowed
    (Path(purelib.strip()) / "_edge_agent_test_deps.pth").write_text("\n".join(borrowed) + "\n")
    return env_dir


def _check(cmd: list[str], **kwargs: Any) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _run_installed(
    venv: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command from the venv's bin/, run from a folder outside the checkout
    with no PYTHONPATH, as a user of the installed wheel runs it."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        timeout=300,
        check=False,
    )


_WHERE = """
import json, sys
import edge_agent
from edge_agent.toolbox.registry import Registry
from edge_agent.resources import data_path
print(json.dumps({
    "package": edge_agent.__file__,
    "sys_path": sys.path,
    "data": {kind: str(data_path(kind)) for kind in ("grammars", "models", "tools")},
    "tools": sorted({str(t.module_file) for t in Registry.from_dirs()}),
}))
"""


@pytest.mark.slow
def test_the_wheel_carries_its_data_and_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    proc = _run_installed(venv, tmp_path, "python", "-c", _WHERE)
    assert proc.returncode == 0, proc.stderr
    where = json.loads(proc.stdout)
    package = Path(where["package"]).parent
    assert package.is_relative_to(venv), where["package"]
    assert str(REPO) not in where["sys_path"]
    for kind, folder in where["data"].items():
        assert Path(folder) == package / "_data" / kind
        shipped = {p.name for p in (REPO / kind).iterdir() if p.is_file()}
        assert shipped <= {p.name for p in Path(folder).iterdir()}, f"{kind}/ is not all carried"
    tools = package / "_data" / "tools"
    assert where["tools"] and all(Path(p).parent == tools for p in where["tools"])


@pytest.mark.slow
def test_the_installed_cli_lists_the_builtin_tools(venv: Path, tmp_path: Path) -> None:
    proc = _run_installed(venv, tmp_path, "edge-agent", "tools", "list")
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert {"set_light", "calculate"} <= names


@pytest.mark.slow
@pytest.mark.model
def test_the_installed_cli_runs_ask(venv: Path, tmp_path: Path) -> None:
    from edge_agent.models import default_model_name, fetch_model, models_dir

    fetch_model(default_model_name(), progress=False)  # cached: only verified
    proc = _run_installed(
        venv, tmp_path, "edge-agent", "ask", "--json", "--no-exec", "Turn on the kitchen light",
        env={"EDGE_AGENT_MODELS_DIR": str(models_dir())},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    [call] = out["tool_calls"]
    assert call["name"] == "set_light"
    assert call["arguments"]["room"] == "kitchen" and call["arguments"]["on"] is True
