"""One spelling of the cloud endpoint's flags for every command.

``ask``, ``bench bfcl``, ``bench ablation`` and ``cloud-bridge`` all name an
OpenAI-compatible endpoint. They used to spell it two ways
(``--llm-url/--llm-token-file/--llm-ca`` and
``--endpoint/--api-key-file/--ca-bundle``); the ``--llm-*`` names are the
ones now, and the others stay as aliases for one release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def add_endpoint_flags(parser: Any, *, model_alias: bool = False) -> None:
    """``--llm-url``, ``--llm-model``, ``--llm-token-file``, ``--llm-ca`` on
    ``parser`` (a parser or an argument group). ``model_alias``: also accept
    ``--model`` for the endpoint's model (``cloud-bridge``, which has no local one)."""
    parser.add_argument(
        "--llm-url", "--endpoint", dest="llm_url", metavar="URL",
        help="OpenAI-compatible base URL, e.g. https://host/v1 (--endpoint: old name)",
    )  # fmt: skip
    model = ("--llm-model", "--model") if model_alias else ("--llm-model",)
    parser.add_argument(
        *model, dest="llm_model", metavar="NAME", help="the model to ask the endpoint for"
    )
    parser.add_argument(
        "--llm-token-file", "--api-key-file", dest="llm_token_file", type=Path, metavar="FILE",
        help="file holding the bearer token, mode 0600 (--api-key-file: old name)",
    )  # fmt: skip
    parser.add_argument(
        "--llm-ca", "--ca-bundle", dest="llm_ca", type=Path, metavar="FILE",
        help="CA bundle that signs the endpoint's certificate (--ca-bundle: old name)",
    )  # fmt: skip


__all__ = ["add_endpoint_flags"]
