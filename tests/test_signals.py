"""deferred_interrupts: a signal inside the block waits for the block's end, then reaches the old handler;
terminate_as_interrupt: SIGTERM raises Terminated, a KeyboardInterrupt, also when held by the block."""

import os
import signal

import pytest

from dfq.signals import Terminated, deferred_interrupts, terminate_as_interrupt


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler during each test: a shell starts background jobs (``make test &``) with
    SIGINT ignored, and the tests are about what the block does to the handler it finds."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_sigint_inside_the_block_is_delivered_after_it():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("body finished")
    assert done == ["body finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the old handler is back


def test_sigterm_reaches_the_installed_handler_once():
    seen = []
    old = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # held while the block runs
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


def test_no_signal_no_effect():
    with deferred_interrupts():
        x = 1
    assert x == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_after_terminate_as_interrupt_is_a_keyboard_interrupt_of_its_own_class():
    old = signal.getsignal(signal.SIGTERM)
    try:
        terminate_as_interrupt()
        with pytest.raises(Terminated) as e:
            os.kill(os.getpid(), signal.SIGTERM)
        assert isinstance(e.value, KeyboardInterrupt)  # every loop that checkpoints on Ctrl-C catches it
        done = []
        with pytest.raises(Terminated):
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("step committed")
        assert done == ["step committed"]
    finally:
        signal.signal(signal.SIGTERM, old)
