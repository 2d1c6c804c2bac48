"""The command line, driven through click's CliRunner: exit codes, formats, output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ai4ec import __version__
from ai4ec import cli as cli_module
from ai4ec.cli import cli, main

from ..conftest import SAMPLES, sample_files


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    res = runner.invoke(cli, ["--version"])
    assert res.exit_code == 0
    assert __version__ in res.output


def test_help_teaches_the_flow(runner: CliRunner) -> None:
    res = runner.invoke(cli, ["--help"])
    assert res.exit_code == 0
    for word in ("init", "validate", "build"):
        assert word in res.output
    res = runner.invoke(cli, ["validate", "--help"])
    assert "--format" in res.output and "github" in res.output


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.parent.name)
def test_validate_samples(runner: CliRunner, sample: Path) -> None:
    res = runner.invoke(cli, ["validate", str(sample)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "valid" in res.output


def test_validate_json_format(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(
        cli, ["validate", "--format", "json", str(SAMPLES / "multi-env/platform.yaml")]
    )
    data = json.loads(res.output)
    assert res.exit_code == 0
    assert data["valid"] is True and data["environments"] == ["dev", "prod"]
    bad = tmp_path / "p.yaml"
    bad.write_text("apiVersion: ai4ec/v1\nkind: Platform\n")
    res = runner.invoke(cli, ["validate", "--format", "json", str(bad)])
    data = json.loads(res.output)
    assert res.exit_code == 1
    assert data["valid"] is False
    codes = {d["code"] for d in data["diagnostics"]}
    assert codes == {"E-SCHEMA-REQUIRED"}
    assert all(d["line"] and d["file"] == str(bad) for d in data["diagnostics"])


def test_validate_env_selection(runner: CliRunner) -> None:
    f = str(SAMPLES / "multi-env/platform.yaml")
    res = runner.invoke(cli, ["validate", "-e", "prod", f])
    assert res.exit_code == 0 and "(prod)" in res.output
    res = runner.invoke(cli, ["validate", "-e", "staging", f])
    assert res.exit_code == 1
    assert "E-ENV-UNKNOWN" in res.output and "dev, prod" in res.output


def test_strict_turns_warnings_into_failure(runner: CliRunner, tmp_path: Path) -> None:
    text = (SAMPLES / "minimal/platform.yaml").read_text()
    f = tmp_path / "platform.yaml"
    f.write_text(text.replace("    products: [public]\n", "", 1))
    assert runner.invoke(cli, ["validate", str(f)]).exit_code == 0
    res = runner.invoke(cli, ["validate", "--strict", str(f)])
    assert res.exit_code == 1
    assert "W-API-NO-PRODUCT" in res.output


def test_missing_file_is_a_user_error(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["validate", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 1
    assert "E-FILE-NOT-FOUND" in res.output and "ai4ec init" in res.output


def test_usage_error_exits_1_not_2(capsys: pytest.CaptureFixture[str]) -> None:
    # 2 is reserved for `diff` finding changes, so a usage mistake must not use it.
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--format", "yaml"])
    assert exc.value.code == 1
    assert "Invalid value" in capsys.readouterr().err


def test_internal_error_is_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr("ai4ec.pipeline.check_platform", boom)
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(SAMPLES / "minimal/platform.yaml")])
    err = capsys.readouterr().err
    assert exc.value.code == cli_module.EXIT_INTERNAL
    assert "Traceback" not in err and "ai4ec bug" in err and "kaboom" in err
    with pytest.raises(SystemExit):
        main(["--debug", "validate", str(SAMPLES / "minimal/platform.yaml")])
    assert "Traceback" in capsys.readouterr().err


def test_build_writes_env_dirs_and_manifest(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(
        cli,
        ["build", str(SAMPLES / "multi-env/platform.yaml"), "-o", str(out)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["dev", "prod"]
    manifest = json.loads((out / "prod/manifest.json").read_text())
    assert manifest["environment"] == "prod" and manifest["platform"] == "wildlife"
    listed = {a["path"] for a in manifest["artifacts"]}
    on_disk = {
        str(p.relative_to(out / "prod")) for p in (out / "prod").rglob("*") if p.is_file()
    } - {"manifest.json"}
    assert listed == on_disk


def test_failed_build_leaves_previous_output(runner: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "platform.yaml"
    shutil.copy(SAMPLES / "minimal/platform.yaml", src)
    out = tmp_path / "out"
    assert runner.invoke(cli, ["build", str(src), "-o", str(out)]).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    src.write_text(src.read_text().replace('"1.35"', "1.30"))
    res = runner.invoke(cli, ["build", str(src), "-o", str(out)])
    assert res.exit_code == 1 and "E-YAML-NUMBER" in res.output
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging dirs left behind"


def test_build_is_byte_identical(runner: CliRunner, tmp_path: Path) -> None:
    for name in ("a", "b"):
        res = runner.invoke(
            cli, ["build", str(SAMPLES / "camera-trap/platform.yaml"), "-o", str(tmp_path / name)]
        )
        assert res.exit_code == 0, res.output
    a = {
        p.relative_to(tmp_path / "a"): p.read_bytes()
        for p in (tmp_path / "a").rglob("*")
        if p.is_file()
    }
    b = {
        p.relative_to(tmp_path / "b"): p.read_bytes()
        for p in (tmp_path / "b").rglob("*")
        if p.is_file()
    }
    assert a == b


def test_schema_command(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["schema"])
    assert json.loads(res.output)["title"].startswith("ai4ec")
    res = runner.invoke(cli, ["schema", "--markdown"])
    assert res.output.startswith("# platform.yaml reference")


def test_init_writes_a_valid_starter(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "new" / "platform.yaml"
    res = runner.invoke(cli, ["init", str(target)])
    assert res.exit_code == 0, res.output
    assert target.read_text().startswith("# yaml-language-server: $schema=./platform.schema.json")
    assert (target.parent / "platform.schema.json").exists()
    assert runner.invoke(cli, ["validate", str(target)]).exit_code == 0
    again = runner.invoke(cli, ["init", str(target)])
    assert again.exit_code == 1 and "already exists" in again.output
    assert runner.invoke(cli, ["init", "--force", str(target)]).exit_code == 0


def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The installed `ai4ec` command, not CliRunner: exit codes must reach the shell."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("ai4ec")
    ok = subprocess.run(
        [exe, "validate", str(SAMPLES / "minimal/platform.yaml")], capture_output=True
    )
    assert ok.returncode == 0
    bad = tmp_path / "p.yaml"
    bad.write_text("apiVersion: ai4ec/v1\n")
    res = subprocess.run([exe, "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    res = subprocess.run([exe, "build", str(bad), "-o", str(tmp_path / "o")], capture_output=True)
    assert res.returncode == 1
    res = subprocess.run([exe, "init", str(SAMPLES / "minimal/platform.yaml")], capture_output=True)
    assert res.returncode == 1  # refuses to overwrite
    res = subprocess.run([exe, "validate", "--nope"], capture_output=True)
    assert res.returncode == 1


def test_env_option_completes_environment_names(tmp_path: Path) -> None:
    """`ai4ec build FILE -e <TAB>` offers the file's environments; a broken file offers none.

    Driven the way bash drives it: ``_AI4EC_COMPLETE=bash_complete`` with the words typed.
    """

    def complete(*words: str) -> list[str]:
        env = {
            "_AI4EC_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(("ai4ec", *words)),
            "COMP_CWORD": str(len(words)),
        }
        res = CliRunner().invoke(cli, [], env=env, prog_name="ai4ec")
        return [line.split(",", 1)[1] for line in res.output.splitlines() if "," in line]

    platform = SAMPLES / "multi-env" / "platform.yaml"
    assert complete("build", str(platform), "-e", "") == ["dev", "prod"]
    assert complete("validate", str(platform), "-e", "p") == ["prod"]
    broken = tmp_path / "platform.yaml"
    broken.write_text("environments: [unclosed", encoding="utf-8")
    assert complete("validate", str(broken), "-e", "") == []
