"""While a schedule call runs, full garbage collections wait longer (runtime/gcpolicy.py);
the program's own setting is back afterwards, and a change it makes meanwhile stays.
A finished call leaves as few objects as it can for the collector to scan."""
import gc

import pydron
from pydron.runtime import gcpolicy

import dhelpers as H


@pydron.schedule
def thresholds_inside(n):
    values = [H.inc(i) for i in range(n)]
    seen = gc.get_threshold()  # an ordinary call: a sync point
    return sum(values), seen


@pydron.schedule
def changes_them(n):
    gc.set_threshold(500, 5, 5)
    return [H.inc(i) for i in range(n)]


def test_full_collections_wait_longer_during_a_run_only():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        total, inside = thresholds_inside(20)
        assert total == sum(range(1, 21))
        assert inside == (700, 10, gcpolicy.FULL_COLLECTION_AFTER)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_a_setting_the_program_makes_during_a_run_stays():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert changes_them(5) == [1, 2, 3, 4, 5]
        assert gc.get_threshold() == (500, 5, 5)
    finally:
        gc.set_threshold(*before)


def test_a_disabled_or_already_lazier_collector_is_left_alone():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 1000)
        assert thresholds_inside(3)[1] == (700, 10, 1000)
        gc.set_threshold(0, 10, 10)  # threshold 0: automatic collection off
        assert thresholds_inside(3)[1] == (0, 10, 10)
    finally:
        gc.set_threshold(*before)


@pydron.schedule
def tracked_objects_per_call(n):
    before = len(gc.get_objects())  # an ordinary call: a sync point
    values = [H.inc(i) for i in range(n)]
    after = len(gc.get_objects())  # every call has finished by now
    return (after - before) / n, sum(values)


def test_a_finished_call_keeps_only_its_future_for_the_collector():
    """Each future the program holds is one object the collector scans; a bound method
    kept per future made it two (twice the cost of every full collection)."""
    per_call, total = tracked_objects_per_call(3000)
    assert total == sum(range(1, 3001))
    assert per_call < 1.1, per_call
