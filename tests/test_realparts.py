"""tests/realparts.py: a missing real part skips a test, and fails it under CI."""
import pytest

import realparts


@pytest.mark.parametrize("value,ci", [("true", True), ("1", True), ("yes", True), ("", False),
                                      ("false", False), ("0", False), ("no", False)])
def test_under_ci(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert realparts.under_ci() is ci


def test_missing_part_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no sshd here"):
        realparts.unavailable("no sshd here")


def test_missing_part_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no sshd here \(CI=true: every real part must run"):
        realparts.unavailable("no sshd here")


def test_need_module(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert realparts.need_module("json", "json").dumps(1) == "1"
    with pytest.raises(pytest.fail.Exception, match="moto tests need it: No module named 'no_such_mod_pd'"):
        realparts.need_module("no_such_mod_pd", "moto tests need it")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="No module named 'no_such_mod_pd'"):
        realparts.need_module("no_such_mod_pd", "moto tests need it")
