"""The transfer techniques' config: refused where they cannot run, with the key and the fix;
YAML reads `on: item` as a key (only true/false are booleans)."""

from __future__ import annotations

import pytest

from distrec.config import ConfigError, config_from_dict
from distrec.config.load import parse_value

TWO = {
    "domains": [
        {"name": "a", "format": "prepared", "kg_fields": {"genre": "genre"}},
        {"name": "b", "format": "prepared"},
    ],
    "sources": ["a"],
    "target": "b",
}


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"stages": {"distill": {"enabled": True}, "adapt": {"enabled": False}}},
            r"stages.distill is enabled but its teacher, the adapt stage, does not run",
        ),
        (
            {
                "stages": {
                    "distill": {"enabled": True, "teacher": "adapt_full"},
                    "adapt": {"mode": "lora"},
                }
            },
            r"teacher='adapt_full' needs stages.adapt.mode=auto",
        ),
        (
            {"data": TWO, "model": {"kg": {}, "architecture": "id_only"}},
            r"model.kg works on the item tower's text path.*id_only",
        ),
        (
            {"data": TWO, "model": {"domain_adversarial": {}, "architecture": "id_only"}},
            r"model.domain_adversarial works on the item tower's text path",
        ),
        (
            {
                "data": {
                    **TWO,
                    "domains": [
                        {"name": "a", "format": "prepared"},
                        {"name": "b", "format": "prepared"},
                    ],
                },
                "model": {"kg": {}},
            },
            r"model.kg is set but no domain gives graph edges",
        ),
        (
            {
                "data": {**TWO, "target": None},
                "model": {"domain_adversarial": {}},
                "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
            },
            r"model.domain_adversarial aligns sources with the target",
        ),
        (
            {"stages": {"distill": {"student": {"dim": 30, "heads": 4}}}},
            r"stages.distill.student.dim=30 is not divisible by heads=4",
        ),
    ],
)
def test_transfer_options_are_refused_where_they_cannot_run(tree, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tree)


def test_a_valid_transfer_config_loads():
    cfg = config_from_dict(
        {
            "data": TWO,
            "model": {"kg": {"aggregate": "attention"}, "domain_adversarial": {"on": "user"}},
            "stages": {"distill": {"enabled": True, "teacher": "adapt_lora"}},
        }
    )
    assert cfg.model.domain_adversarial.on == "user" and cfg.model.kg.aggregate == "attention"


def test_yaml_reads_on_as_a_key_and_only_true_false_as_booleans():
    assert parse_value("{weight: 0.5, on: user}") == {"weight": 0.5, "on": "user"}
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("no") == "no" and parse_value("off") == "off"
