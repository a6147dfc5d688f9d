"""The busy-machine case of the bench: it starts and always stops its busy processes,
and reports every thread count against one thread."""
import numpy as np
import pytest

from fastopt.bench import cli, contention


def test_measure_reports_every_thread_count_and_stops_its_processes(monkeypatch):
    started = []
    real = contention.start_busy
    monkeypatch.setattr(contention, "start_busy", lambda n, seconds: started.extend(real(n, seconds)) or started)
    rows = contention.measure(sizes=(1000, 5000), busy=1, steps=3, max_threads=2, warm=0.0)
    assert [r["n"] for r in rows] == [1000, 5000] and all(r["busy"] == 1 for r in rows)
    for r in rows:
        assert sorted(r["times"]) == [1, 2] and all(0 < t < 1 for t in r["times"].values())
    assert len(started) == 1 and all(p.poll() is not None for p in started)
    text = contention.lines(rows, steps=3)
    assert "1 busy processes" in text[0] and "2 vs 1" in text[1] and text[2].split()[0] == "1,000"


def test_the_processes_are_stopped_when_a_measurement_fails(monkeypatch):
    started = []
    real = contention.start_busy
    monkeypatch.setattr(contention, "start_busy", lambda n, seconds: started.extend(real(n, seconds)) or started)
    monkeypatch.setattr(contention, "step_times", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        contention.measure(sizes=(1000,), busy=2, steps=3, max_threads=2, warm=0.0)
    assert len(started) == 2 and all(p.poll() is not None for p in started)


@pytest.mark.parametrize("argv, busy", [(["--contention"], None), (["--contention", "--busy", "4"], 4)])
def test_contention_is_its_own_part(argv, busy):
    import argparse
    args = cli.add_arguments(argparse.ArgumentParser()).parse_args(argv)
    cfg = cli.config_from_args(args)
    assert cfg.contention and cfg.busy == busy
    assert not (cfg.table or cfg.many_arrays or cfg.small)


def test_a_negative_busy_count_is_refused():
    import argparse
    args = cli.add_arguments(argparse.ArgumentParser()).parse_args(["--contention", "--busy", "-1"])
    with pytest.raises(ValueError, match="--busy"):
        cli.config_from_args(args)


def test_the_step_times_are_of_real_steps():
    times = contention.step_times(2000, [1], steps=3, rounds=1)
    assert set(times) == {1} and times[1] > 0
    assert np.isfinite(times[1])
