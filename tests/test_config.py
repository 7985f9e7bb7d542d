"""Typed configuration: defaults, TOML, EDGE_AGENT_* environment, and errors
that name the offending key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge_agent.config import AgentSettings, EdgeAgentConfig, ModelSettings, load_config
from edge_agent.errors import ConfigError, EdgeAgentError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No EDGE_AGENT_* variable from the outside world leaks into a test."""
    for name in list(os.environ):
        if name.startswith("EDGE_AGENT_"):
            monkeypatch.delenv(name)
    yield


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge-agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    config = load_config()
    assert config.model == ModelSettings()
    assert config.model.name is None
    assert config.model.n_ctx == 4096
    assert config.model.n_threads is None
    assert config.model.max_tokens == 256
    assert config.agent == AgentSettings()
    assert config.agent.tool_choice == "auto"
    assert config.agent.parallel_calls is False
    assert config.agent.repair_attempts == 1
    assert config.tools_dirs == []


def test_every_field_is_described() -> None:
    """Every key, in every section, carries a description (the CLI and the
    example config are built from them)."""
    pending: list[type[BaseModel]] = [EdgeAgentConfig]
    seen = 0
    while pending:
        model = pending.pop()
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            seen += 1
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                pending.append(field.annotation)
    assert seen > 10


def test_a_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
tools_dirs = ["/opt/tools", "more-tools"]

[model]
name = "qwen2.5-coder-0.5b"
n_threads = 2
max_tokens = 128

[agent]
tool_choice = "required"
parallel_calls = true
system_prompt = "Be brief."
""",
    )
    config = load_config(path)
    assert config.model.name == "qwen2.5-coder-0.5b"
    assert config.model.n_threads == 2
    assert config.model.max_tokens == 128
    assert config.model.n_ctx == 4096  # untouched keys keep their defaults
    assert config.agent.tool_choice == "required"
    assert config.agent.parallel_calls is True
    assert config.agent.system_prompt == "Be brief."
    assert config.tools_dirs == [Path("/opt/tools"), Path("more-tools")]


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).model_dump() == load_config().model_dump()


def test_the_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODEL__N_THREADS", "3")
    monkeypatch.setenv("EDGE_AGENT_AGENT__PARALLEL_CALLS", "true")
    config = load_config()
    assert config.model.n_threads == 3
    assert config.agent.parallel_calls is True


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[model]\nn_threads = 1\nmax_tokens = 64\n")
    monkeypatch.setenv("EDGE_AGENT_MODEL__N_THREADS", "4")
    config = load_config(path)
    assert config.model.n_threads == 4
    assert config.model.max_tokens == 64  # the rest of the section still comes from the file


def test_other_edge_agent_variables_are_not_config_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The model store and grammar cache read their own EDGE_AGENT_* variables."""
    monkeypatch.setenv("EDGE_AGENT_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("EDGE_AGENT_GRAMMAR_DIR", str(tmp_path))
    monkeypatch.setenv("EDGE_AGENT_LLAMA_VERBOSE", "1")
    assert load_config() == EdgeAgentConfig()


def test_unknown_key_names_the_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\nn_thread = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert "model.n_thread" in message
    assert str(path) in message
    assert "Extra inputs are not permitted" in message


def test_unknown_section_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routing: Extra inputs"):
        load_config(write(tmp_path, "[routing]\ntau = 0.5\n"))


def test_unknown_nested_environment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODEL__N_THREAD", "2")
    with pytest.raises(ConfigError, match=r"model\.n_thread"):
        load_config()


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ("[model]\nn_ctx = 100\n", "model.n_ctx", "greater than or equal to 512"),
        ("[model]\nn_threads = 0\n", "model.n_threads", "greater than or equal to 1"),
        ("[model]\nmax_tokens = 100000\n", "model.max_tokens", "less than or equal to 8192"),
        ("[agent]\nrepair_attempts = 9\n", "agent.repair_attempts", "less than or equal to 3"),
        ("[agent]\nmax_calls = 0\n", "agent.max_calls", "greater than or equal to 1"),
        ('[agent]\ntool_choice = "sometimes"\n', "agent.tool_choice", "'auto'"),
        ('[model]\nn_ctx = "big"\n', "model.n_ctx", "valid integer"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    assert f"{key}: " in info.value.message
    assert problem in info.value.message


def test_out_of_bounds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODEL__N_THREADS", "0")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert info.value.message.startswith("model.n_threads: ")


def test_several_problems_are_counted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(and 1 more\)"):
        load_config(write(tmp_path, "[model]\nn_ctx = 1\nn_threads = 0\n"))


def test_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.message == f"config file {missing} does not exist"


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path)


def test_invalid_toml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "[model\nn_ctx = 1024\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert "line 1" in info.value.message
    assert info.value.__cause__ is not None


def test_config_errors_carry_a_hint() -> None:
    error = ConfigError("x")
    assert isinstance(error, EdgeAgentError)
    assert "config example" in error.hint
    assert not error.retryable


def test_keyword_overrides_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODEL__N_THREADS", "3")
    config = load_config(write(tmp_path, "[agent]\nmax_steps = 2\n"), model={"n_threads": 1})
    assert config.model.n_threads == 1
    assert config.agent.max_steps == 2
