"""The garbage collector's schedule (sensor/heap.py, decision 0203): off while the command's modules load, then on
again with start-up's objects frozen, whatever way the command ends; a collector the caller turned off stays off."""

from __future__ import annotations

import gc

import pytest

from sensor import entry, heap


@pytest.fixture(autouse=True)
def restore_collector():
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.unfreeze()  # an earlier test's run may have frozen objects: each test here starts with none
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    (gc.enable if enabled else gc.disable)()


def test_collector_on_again_after_a_command(capsys) -> None:
    gc.enable()
    assert entry.main(["--version"]) == 0
    assert gc.isenabled()
    assert "truesource" in capsys.readouterr().out


def test_a_command_that_fails_leaves_the_collector_on(tmp_path) -> None:
    gc.enable()
    code = entry.main(["replay", str(tmp_path / "missing.pcap"), "--rules", str(tmp_path / "missing.txt")])
    assert code != 0
    assert gc.isenabled()


def test_a_command_run_freezes_start_up_and_collects_young_objects_rarely(tmp_path) -> None:
    gc.enable()
    gc.set_threshold(700, 10, 10)
    rules = tmp_path / "rules.txt"
    rules.write_text("evil.example\n")
    code = entry.main(["rules", "check", str(rules)])  # a command that reads its options and runs
    assert code == 0
    assert gc.isenabled()
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    assert gc.get_freeze_count() > 0  # start-up's objects: moved where no collection walks them


def test_a_collector_turned_off_by_the_caller_stays_off(capsys) -> None:
    gc.disable()
    assert entry.main(["--version"]) == 0
    assert not gc.isenabled()


def test_an_unknown_option_ends_before_the_options_are_read_and_leaves_the_collector_on(capsys) -> None:
    gc.enable()
    with pytest.raises(SystemExit):
        entry.main(["replay", "--no-such-option"])
    assert gc.isenabled()
    assert "error" in capsys.readouterr().err
