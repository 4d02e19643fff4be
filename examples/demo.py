"""The seed's calibration pipeline, run plainly and under @pydron.schedule.

`process` is CPU-bound pure Python; pydron runs its calls on one worker per
local core (no configuration needed) and returns the same list.
"""
import time

import pydron


@pydron.functional
def process(input):
    """Some pure-Python number crunching: about a quarter of a second of CPU."""
    total = 0
    for i in range(5_000_000):
        total = (total + i * input) % 1_000_003
    return total


def calibration_pipeline(inputs):
    outputs = []
    for input in inputs:
        output = process(input)
        outputs = outputs + [output]
    return outputs


scheduled_pipeline = pydron.schedule(calibration_pipeline)


def main() -> None:
    inputs = list(range(1, 9))
    scheduled_pipeline([0])  # start the workers, so the timing below is the pipeline's

    start = time.perf_counter()
    expected = calibration_pipeline(inputs)
    sequential = time.perf_counter() - start

    start = time.perf_counter()
    result = scheduled_pipeline(inputs)
    parallel = time.perf_counter() - start

    assert result == expected, (result, expected)
    workers = pydron.workers()
    stats = pydron.stats()
    print(f"result:         {result}")
    print(f"sequential:     {sequential:6.2f} s")
    print(f"@schedule:      {parallel:6.2f} s   ({sequential / parallel:.2f}x faster, "
          f"{len(workers)} workers; expected: close to {min(len(workers), len(inputs))}x "
          f"on an otherwise idle machine)")
    print(f"tasks:          {stats.tasks}, {stats.task_seconds:.2f} s of task time in "
          f"{stats.elapsed:.2f} s ({stats.speedup:.2f}x overlap)")
    for worker in workers:
        print(f"  {worker.label}: {worker.kind} pid {worker.pid} on {worker.host}, "
              f"{stats.tasks_per_worker.get(worker.label, 0)} tasks, "
              f"busy {stats.busy_fraction().get(worker.label, 0):.0%}")


if __name__ == "__main__":
    main()
