"""Per-render cost of the template stage's guarded sandbox against Jinja2's plain ImmutableSandboxedEnvironment.

The two templates of pipelines/product_copy.yaml, the same row values, thread CPU time (less
sensitive to a loaded machine than wall time), arms interleaved, the best of 7 runs of 20,000
renders each, repeated `--repeats` times; prints the median ratio per template.

    .venv/bin/python benchmarks/template_render.py
"""

from __future__ import annotations

import argparse
import statistics
import time

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aigc_pipeline.stages.template_sandbox import SandboxedTemplate

BRIEF = '{{ product }} for {{ audience }}: {{ features | join(", ") }}. Now only ${{ "%.2f" | format(price) }}.'
TAGLINE = "{{ product | upper }}: {{ copy | truncate(60) }}"
ROW = {"product": "Aurora Lamp 12", "audience": "students", "features": ["waterproof", "USB-C", "quiet"], "price": 12.5}
COPY = {"product": "Aurora Lamp 12", "copy": "Aurora Lamp 12 for students: waterproof, USB-C, quiet. Now only $12.50."}


def per_render(env: ImmutableSandboxedEnvironment | None, text: str, values: dict[str, object], renders: int) -> float:
    """Best of 7: thread CPU microseconds per render; `env` None: the template stage's own
    (`SandboxedTemplate`: the guarded sandbox, compiled once)."""
    template = env.from_string(text) if env is not None else SandboxedTemplate(text)
    template.render(values)
    best = float("inf")
    for _ in range(7):
        started = time.thread_time()
        for _ in range(renders):
            template.render(values)
        best = min(best, (time.thread_time() - started) / renders)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--renders", type=int, default=20_000)
    args = parser.parse_args()
    plain = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    for name, text, values in (("brief", BRIEF, ROW), ("tagline", TAGLINE, COPY)):
        ratios, plains, guardeds = [], [], []
        for _ in range(args.repeats):
            plains.append(per_render(plain, text, values, args.renders))
            guardeds.append(per_render(None, text, values, args.renders))
            ratios.append(guardeds[-1] / plains[-1])
        print(f"{name}: plain {statistics.median(plains):.1f} µs, guarded {statistics.median(guardeds):.1f} µs "
              f"per render; ratio median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
