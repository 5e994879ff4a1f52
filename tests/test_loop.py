import subprocess
import sys

import pytest

# A signal whose handler runs inside a weakref callback: the KeyboardInterrupt it raises is one
# that Python drops ("Exception ignored in ...") unless interrupts_not_lost sends it again.
DROPPED_IN_A_CALLBACK = """
import contextlib, os, signal, time, weakref
from charlstm import loop

SIGNUM = signal.{signum}


def stop(signum, frame):
    signal.signal(SIGNUM, signal.SIG_IGN)  # one request only, as a sweep's worker takes it
    raise KeyboardInterrupt


class Box:
    pass


def callback(ref):
    os.kill(os.getpid(), SIGNUM)
    sum(range(10))  # the handler runs here, inside the callback


# Ctrl-C's handler as Python sets it in a terminal (a background job starts with SIGINT ignored)
signal.signal(SIGNUM, signal.default_int_handler if SIGNUM == signal.SIGINT else stop)
with {block}:
    box = Box()
    ref = weakref.ref(box, callback)
    try:
        del box
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
        print("ran on")
    except KeyboardInterrupt:
        print("interrupted")
"""


def run_dropped(signum: str, block: str):
    script = DROPPED_IN_A_CALLBACK.format(signum=signum, block=block)
    return subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("signum, block", [
    ("SIGTERM", "loop.interrupts_not_lost(SIGNUM)"),
    ("SIGINT", "loop.interrupts_not_lost()"),
])
def test_an_interrupt_raised_inside_a_weakref_callback_still_stops_the_block(signum, block):
    done = run_dropped(signum, block)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "interrupted\n" and done.stderr == ""


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_without_it_python_drops_that_interrupt(signum):
    # The hazard the block guards against, shown on this Python: the run goes on.
    done = run_dropped(signum, "contextlib.nullcontext()")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran on\n" and "Exception ignored" in done.stderr
    assert "KeyboardInterrupt" in done.stderr
