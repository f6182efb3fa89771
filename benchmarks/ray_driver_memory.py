"""The Ray driver's memory: `aigc run PIPELINE -i ROWS -o OUT --executor ray` in this process.

Prints the driver's peak RSS (which also counts the pages of Ray's object store it mapped) and the
peaks of its private memory (RssAnon) and shared memory (RssShmem), sampled every 0.2 s. Run it
with PYTHONPATH set to another tree to measure that tree's engine in the same way.

    .venv/bin/python benchmarks/ray_driver_memory.py pipelines/product_copy.yaml rows.csv /tmp/out
"""

from __future__ import annotations

import resource
import sys
import threading
import time

from aigc_pipeline.cli import main as aigc

PEAKS = {"RssAnon": 0, "RssShmem": 0}  # KiB


def sample() -> None:
    while True:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                name = line.split(":", 1)[0]
                if name in PEAKS:
                    PEAKS[name] = max(PEAKS[name], int(line.split()[1]))
        time.sleep(0.2)


def main() -> None:
    pipeline, rows, out = sys.argv[1:4]
    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    sys.argv = ["aigc", "run", pipeline, "-i", rows, "-o", out, "-q", "--fresh", "--executor", "ray"]
    try:
        aigc()
    except SystemExit as exc:
        print(f"exit {exc.code}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"driver peak RSS {peak:.0f} MiB, peak RssAnon {PEAKS['RssAnon'] / 1024:.0f} MiB, "
          f"peak RssShmem {PEAKS['RssShmem'] / 1024:.0f} MiB, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
