"""fmuia.console.quiet_stdout silences the calling thread only, and restores the stream after the last user."""

from __future__ import annotations

import io
import sys
import threading

from fmuia.console import quiet_stdout


def test_quiet_in_one_thread_keeps_the_others_and_restores(monkeypatch):
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stdout", sink)
    inside, go_on = threading.Event(), threading.Event()

    def quiet_worker():
        with quiet_stdout():
            print("hidden 1")
            inside.set()
            go_on.wait(5)
            print("hidden 2")

    t = threading.Thread(target=quiet_worker)
    t.start()
    assert inside.wait(5)
    print("shown while the other thread is quiet")
    with quiet_stdout():  # nested users from two threads
        print("hidden 3")
    print("still shown")
    go_on.set()
    t.join(5)
    assert sys.stdout is sink
    assert sink.getvalue() == "shown while the other thread is quiet\nstill shown\n"


def test_many_threads_overlapping_leave_the_original_stream(monkeypatch):
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stdout", sink)
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait(5)
        for _ in range(50):
            with quiet_stdout():
                print("x")
        print(f"done {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sys.stdout is sink
    assert sorted(sink.getvalue().split("\n")[:-1]) == sorted(f"done {i}" for i in range(8))
