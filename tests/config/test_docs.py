import pytest

from distrec.config.docs import config_reference, sections
from distrec.config.schema import RunConfig
from tests.conftest import ROOT

ALL_SECTIONS = list(sections(RunConfig))


@pytest.mark.parametrize(("key", "model"), ALL_SECTIONS, ids=[k or "top" for k, _ in ALL_SECTIONS])
def test_every_field_is_documented(key, model):
    missing = [n for n, f in model.model_fields.items() if not (f.description or "").strip()]
    assert not missing, f"{key or 'top level'}: fields without Field(description=...): {missing}"
    assert (model.__doc__ or "").strip(), f"{model.__name__} has no docstring"


def test_the_reference_has_a_row_per_leaf_field():
    text = config_reference()
    for key in (
        "`seed`",
        "`data.domains[].columns.user`",
        "`model.architecture`",
        "`stages.extra`",
    ):
        assert f"| {key} |" in text
    assert "| `model.user_tower` |" not in text  # sections get a table, not a row


def test_docs_config_md_is_up_to_date():
    path = ROOT / "docs" / "config.md"
    if not path.exists() or path.read_text() != config_reference():
        pytest.fail(
            "docs/config.md is out of date with distrec/config/; regenerate it with "
            "`distrec config docs --out docs/config.md`",
            pytrace=False,
        )
