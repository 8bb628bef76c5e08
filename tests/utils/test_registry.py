"""The Registry behind every extension point."""

import pytest

from distrec.config import ConfigError
from distrec.utils.registry import Registry


def test_unknown_names_list_the_registered_ones_and_names_are_registered_once():
    reg = Registry("widget", "model.widget")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and "a" in reg and reg.names() == ["a"]
    reg.add("a", a)  # the same object again (a module imported twice the same way): fine
    with pytest.raises(
        ConfigError, match=r"model.widget='b': no widget of that name; registered: \['a'\]"
    ):
        reg.get("b")
    with pytest.raises(ConfigError, match=r"widget 'a' is registered twice"):
        reg.add("a", lambda: 2)


def test_relative_plugin_paths_are_made_absolute_for_other_folders(tmp_path, monkeypatch):
    from distrec.utils.plugins import ENV_VAR, absolute_plugins

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, "plug/mine.py, some.module")
    assert absolute_plugins() == f"{tmp_path / 'plug' / 'mine.py'},some.module"
