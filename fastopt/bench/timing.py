"""Generic timing: calibrated samples, interleaved jobs, paired ratios.

Nothing here knows about optimizers (it imports nothing from fastopt), so it can time
any callable, the way ``torch.utils.benchmark`` keeps its ``Timer`` apart from what it
times.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

__all__ = ["SAMPLE_SECONDS", "time_calls", "calibrate", "Job", "Timings", "measure", "single_call_median", "gbps"]

#: Seconds one timing sample should last (small steps are called repeatedly per sample).
SAMPLE_SECONDS = 0.004


def time_calls(fn, number):
    """Seconds per call of ``fn`` over ``number`` back-to-back calls."""
    clock = time.perf_counter
    t0 = clock()
    for _ in range(number):
        fn()
    return (clock() - t0) / number


def calibrate(fn, target=SAMPLE_SECONDS):
    """Warm ``fn`` up (first call: lazy state, page faults, thread start-up) and return how
    many calls make one sample of about ``target`` seconds."""
    fn()
    once = time_calls(fn, 1)
    if once >= target:
        return 1
    return max(1, min(100_000, int(target / max(once, 1e-7))))


@dataclass
class Job:
    """A function to time: ``fn`` is called back to back for each of ``repeats``
    samples; ``setup`` (e.g. choosing the thread count) runs untimed before each."""
    fn: object
    repeats: int
    setup: object = None

    def prepare(self):
        """Run the setup, if any."""
        if self.setup is not None:
            self.setup()


class Timings:
    """Seconds per call of each job, sample by sample (round ``r`` of every job was
    taken back to back). ``t[name]`` is the median; :meth:`ratio` pairs the samples of
    one round, which cancels drift that a ratio of medians would keep."""

    def __init__(self, samples):
        self.samples = samples

    def __getitem__(self, name):
        return statistics.median(self.samples[name])

    def __contains__(self, name):
        return name in self.samples

    def get(self, name):
        """The median, or None for a job that was not run."""
        return self[name] if name in self.samples else None

    def ratio(self, a, b, minus=0.0):
        """Median over rounds of ``(a - minus) / b`` (None if either job is missing)."""
        if a not in self.samples or b not in self.samples:
            return None
        return statistics.median((x - minus) / y for x, y in zip(self.samples[a], self.samples[b]))


def measure(jobs, target=SAMPLE_SECONDS):
    """Time every :class:`Job` of ``jobs`` (name -> job); return :class:`Timings`.

    The jobs are sampled round-robin: sample ``r`` of every job is taken before sample
    ``r + 1`` of any, so slow drift (clock changes, other load) affects all alike and
    cancels in their ratios. Jobs with fewer repeats drop out of the later rounds."""
    numbers = {}
    for name, job in jobs.items():
        job.prepare()
        numbers[name] = calibrate(job.fn, target)
    samples = {name: [] for name in jobs}
    for r in range(max(job.repeats for job in jobs.values())):
        for name, job in jobs.items():
            if r < job.repeats:
                job.prepare()
                samples[name].append(time_calls(job.fn, numbers[name]))
    return Timings(samples)


def single_call_median(fns, calls, rounds=20):
    """Median seconds of individual calls of each function (interleaved in ``rounds``)."""
    clock = time.perf_counter
    samples = {name: [] for name in fns}
    for fn in fns.values():
        fn()
        fn()
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            out = samples[name]
            for _ in range(per_round):
                t0 = clock()
                fn()
                out.append(clock() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def gbps(accesses, itemsize, n, seconds):
    """Effective bandwidth in GB/s (10^9 bytes) of ``accesses`` touches of ``n`` elements."""
    return accesses * itemsize * n / seconds / 1e9
