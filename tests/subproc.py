"""Run a snippet in a fresh interpreter: for reproducers that crashed or hung the
process before they were fixed, so that a regression fails one test, not the run."""
import os
import subprocess
import sys
import textwrap

import fastopt

# the package under test, not the source tree in the cwd (as the suite runs it with -P)
_HOME = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))


def run_snippet(code, *, timeout=120, env=None):
    """``subprocess.CompletedProcess`` of ``python -P -c code``; raises on timeout."""
    full = dict(os.environ)
    full["PYTHONPATH"] = _HOME + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full)


def assert_ok(result, expect="OK"):
    """The snippet exited 0 and printed ``expect`` last."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout.strip().splitlines()[-1:] == [expect], result.stdout + result.stderr
