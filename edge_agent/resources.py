"""Where the shipped data folders are, in a checkout and in an installed wheel.

The grammar primitives (``grammars/``), the model manifest and confidence
weights (``models/``) and the built-in tools (``tools/``) live at the top of
the source tree, where people edit them. A wheel has no source tree, so
``pyproject.toml`` maps each folder into the package as ``edge_agent/_data/<kind>``
at build time. Every user of these folders asks :func:`data_path`, which prefers
the packaged copy and falls back to the checkout (an editable install has no
``_data``, and there the top-level folders are the ones being edited).

The answer is a real :class:`~pathlib.Path`, not a ``Traversable``: tool modules
are imported again by file path inside sandbox children (and ``tools/home.py``
loads its sibling ``_devices.py`` by path), so the files must be on disk. That
holds for a regular install; a zipped install is not supported.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

DataKind = Literal["grammars", "models", "tools"]

_CHECKOUT = Path(__file__).resolve().parent.parent


def data_path(kind: DataKind) -> Path:
    """The folder holding ``kind``: inside the installed package when the wheel
    carries it, else the checkout's top-level folder (which may be absent; the
    caller decides whether that is an error)."""
    packaged = resources.files("edge_agent") / "_data" / kind
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged.resolve()
    return _CHECKOUT / kind
