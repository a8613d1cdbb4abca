import dataclasses
from pathlib import Path

import pytest

from gateway.command_line import build_parser, parse_settings
from gateway.config import MIB, OPTIONS, Settings


def test_defaults() -> None:
    settings = parse_settings([])
    assert (settings.port, settings.chunk_size, settings.max_message_size) == (50051, MIB, 4 * MIB)


def test_environment_names_the_glance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLANCE_URL", "http://glance.internal:9292/")
    assert parse_settings([]).glance_base == "http://glance.internal:9292"


@pytest.mark.parametrize(
    "url", ["ftp://g", "glance:9292", "http://u:p@g:9292", "http://g:9292?x=1", "http://g#f", "http://"]
)
def test_glance_url_must_be_a_plain_http_endpoint(url: str) -> None:
    with pytest.raises(ValueError):
        Settings(glance_url=url)


def test_chunk_must_fit_in_a_message() -> None:
    with pytest.raises(ValueError):
        Settings(glance_url="http://g", chunk_size=4 * MIB, max_message_size=4 * MIB)


def test_bad_command_line_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--glance-url", "ftp://x"])
    assert "glance URL" in capsys.readouterr().err


def test_tls_certificate_and_key_go_together() -> None:
    with pytest.raises(ValueError):
        Settings(glance_url="http://g", tls_cert="cert.pem")
    assert Settings(glance_url="http://g", tls_cert="c.pem", tls_key="k.pem").tls_key == "k.pem"


def test_upload_window_is_bounded() -> None:
    assert parse_settings([]).upload_window == MIB
    assert parse_settings(["--upload-window", str(8 * MIB)]).upload_window == 8 * MIB
    for bad in (0, 1024, 512 * MIB):
        with pytest.raises(ValueError):
            Settings(glance_url="http://g", upload_window=bad)


def test_every_setting_has_exactly_one_option() -> None:
    fields = [field.name for field in dataclasses.fields(Settings)]
    assert sorted(option.field for option in OPTIONS) == sorted(fields)


def test_environment_variables_are_typed_like_their_flags() -> None:
    settings = parse_settings([], environ={"GATEWAY_STALL_TIMEOUT": "2.5", "GATEWAY_MAX_STREAMS": "7"})
    assert (settings.stall_timeout, settings.max_streams) == (2.5, 7)
    # The command line wins over the environment.
    assert parse_settings(["--max-streams", "9"], environ={"GATEWAY_MAX_STREAMS": "7"}).max_streams == 9


def test_help_names_each_flag_its_environment_variable_and_default() -> None:
    text = " ".join(build_parser({}).format_help().split())
    for option in OPTIONS:
        assert option.flag in text
        assert f"(env {option.env}," in text


def test_every_option_reads_its_own_environment_variable() -> None:
    samples = {int: "7", float: "2.5", bool: "false", str: "x"}
    envs = [option.env for option in OPTIONS]
    assert len(set(envs)) == len(envs)
    for option in OPTIONS:
        sample = option.choices[-1] if option.choices else samples[_python_type(option.field)]
        parser = build_parser({option.env: sample})
        default = next(action.default for action in parser._actions if action.dest == option.field)
        assert default != _default(option.field) or option.field == "keepalive_permit_without_calls", option
    environ = {"GATEWAY_KEEPALIVE_PERMIT_WITHOUT_CALLS": "no"}
    assert parse_settings([], environ=environ).keepalive_permit_without_calls is False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_PORT", "fifty"),
        ("GATEWAY_STALL_TIMEOUT", "soon"),
        ("GATEWAY_LOG_FORMAT", "xml"),
        ("GATEWAY_LOG_LEVEL", "LOUD"),
        ("GATEWAY_KEEPALIVE_PERMIT_WITHOUT_CALLS", "maybe"),
        ("GATEWAY_WORKERS", "0"),
        ("GATEWAY_METRICS_PORT", "70000"),
    ],
)
def test_a_bad_environment_value_is_a_usage_error(
    variable: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings([], environ={variable: value})
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert "error:" in error


def test_workers_need_a_fixed_port() -> None:
    with pytest.raises(ValueError, match="fixed --port"):
        Settings(port=0, workers=2)
    with pytest.raises(ValueError, match="fixed --health-port"):
        Settings(port=50051, health_port=0, workers=2)
    assert Settings(port=0, workers=1).port == 0
    assert Settings(port=50051, health_port=8081, workers=2).health_port == 8081


def test_client_certificates_need_tls() -> None:
    with pytest.raises(ValueError, match="--tls-client-ca"):
        Settings(tls_client_ca="ca.pem")


def _python_type(field_name: str) -> type:
    annotation = str(next(f for f in dataclasses.fields(Settings) if f.name == field_name).type)
    return next((t for t in (int, float, bool) if annotation.startswith(t.__name__)), str)


def _default(field_name: str) -> object:
    return next(f for f in dataclasses.fields(Settings) if f.name == field_name).default


def test_the_readme_configuration_table_names_every_option_and_variable() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    for option in OPTIONS:
        row = next((line for line in rows if f"`{option.flag}`" in line), None)
        assert row is not None, f"{option.flag} is missing from the README's configuration table"
        assert f"`{option.env}`" in row, f"{option.env} is missing from the row of {option.flag}"
