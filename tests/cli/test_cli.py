import json
import subprocess

import pytest

from distrec.cli import build_parser, main
from tests.conftest import ROOT, python

COMMANDS = ["config", "data", "train", "evaluate", "recommend", "tune", "bench", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: distrec" in capsys.readouterr().out


def test_config_validate_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["config", "validate", "configs/demo.yaml"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    assert main(["config", "validate", str(bad)]) == 2
    assert "train.lrr: unknown key" in capsys.readouterr().err


def test_config_show_prints_resolved_config_with_overrides(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["config", "show", "configs/demo.yaml", "train.lr=0.02"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.02" in out and "max_history:" in out


def test_console_script_runs():
    out = subprocess.run(
        [python(), "-m", "distrec.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "cross-domain" in out.stdout.lower()


def test_config_docs_prints_or_writes_the_generated_reference(tmp_path, capsys):
    from distrec.config.docs import config_reference

    reference = config_reference()
    assert main(["config", "docs"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == reference.rstrip("\n")
    out = tmp_path / "docs" / "config.md"
    out.parent.mkdir()
    out.write_text("a stale copy\n")
    assert main(["config", "docs", "--out", str(out)]) == 0  # generated: overwritten
    assert out.read_text().rstrip("\n") == reference.rstrip("\n")
    assert f"to {out}" in capsys.readouterr().out


def test_config_validate_checks_dataset_names_against_the_registries(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "data:\n  domains:\n    - {name: d, embedded: ml-20m}\n  sources: [d]\n"
        "stages: {zero_shot: false, adapt: {enabled: false}, baselines: []}\n"
    )
    assert main(["config", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "data.domains.0 ('d')" in err and "embedded='ml-20m'" in err and "'ml-1m'" in err


def test_config_validate_runs_every_preflight_check(capsys, monkeypatch):
    """validate refuses what training would refuse: a missing launcher, an unknown name."""
    monkeypatch.chdir(ROOT)
    for override, message in (
        (
            "distributed.launcher=launch/nope.yaml",
            "distributed.launcher='launch/nope.yaml': no such file",
        ),
        ("model.heads={nope: 1.0}", "model.heads='nope': no head of that name"),
        ("eval.metric=rmse", "eval.metric='rmse' is the 'rating' head's, but model.heads="),
        ("model.architecture=nope", "model.architecture='nope': no model architecture"),
    ):
        assert main(["config", "validate", "configs/demo.yaml", override]) == 2
        assert message in capsys.readouterr().err


SINGLE_DOMAIN = """\
data:
  prepared_dir: {out}
  domains:
    - name: shop
      format: csv
      interactions: {inter}
      items: {items}
      columns: {{rating: null}}
      text_fields: [title]
      template: "{{title}}"
{extra}"""


def _single_domain(tmp_path, extra: str = "") -> str:
    inter, items = tmp_path / "log.csv", tmp_path / "items.csv"
    inter.write_text("user_id,item_id,timestamp\nu1,A,2024-03-01\nu1,B,2024-03-02\nu1,A,3\n")
    items.write_text("item_id,title\nA,Alpha\nB,Beta\n")
    config = tmp_path / "shop.yaml"
    config.write_text(
        SINGLE_DOMAIN.format(out=tmp_path / "out", inter=inter, items=items, extra=extra)
    )
    return str(config)


def test_data_prepare_validates_only_the_data_section(tmp_path, capsys):
    """One domain, no sources: the default stages (pretraining) cannot run, the data can be
    prepared; validate and train still refuse the config with the cross-section message."""
    config = _single_domain(tmp_path, "train:\n  lr: 0.1\n")
    refused = "stages.pretrain is enabled but data.sources is empty"
    for command in (["config", "validate", config], ["train", "--config", config]):
        assert main(command) == 2
        assert refused in capsys.readouterr().err
    assert main(["data", "prepare", "--config", config, "data.domains.0.on_bad_rows=skip"]) == 0
    assert "prepared " in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "shop" / "manifest.json").read_text())
    assert manifest["counts"]["bad_rows_skipped"]["interactions"] == {"mixed timestamp kinds": 1}


def test_data_prepare_still_reports_data_errors(tmp_path, capsys):
    config = _single_domain(tmp_path)
    assert main(["data", "prepare", "--config", config, "data.domains.0.k_core=-1"]) == 2
    assert "data.domains.0.k_core=-1: Input should be greater than or equal to 0" in (
        capsys.readouterr().err
    )
    assert main(["data", "prepare", "--config", config]) == 2  # the mixed row, on_bad_rows: fail
    assert "log.csv:4 column 'timestamp': mixed timestamp kinds: '3' is a number" in (
        capsys.readouterr().err
    )
    assert main(["data", "prepare", "--config", config, "dta.raw_dir=x"]) == 2
    assert "dta: unknown key (did you mean 'data'?)" in capsys.readouterr().err
    assert main(["data", "prepare", "--config", config, "data.target=nope"]) == 2
    assert "data.target: unknown domain 'nope'; known domains: ['shop']" in capsys.readouterr().err
