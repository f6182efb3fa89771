"""Served models: `llm.text` with `backend: openai` against a hand-written asyncio + openai script.

A real server (`transformers serve` on the tiny LM, CPU; `--servers` replicas, 2 by default, one
torch thread each, which the proxy serves in turn, as a round-robin load balancer does) behind the
fault proxy that adds a fixed latency to every request (200 ms: a hosted model's round trip). One
`transformers serve` process answers one request at a time (its generate thread is sequential),
so replicas are what lets the server side answer in parallel. Both arms send the same 256 chat
requests (greedy, the same seeds) to the same proxy in the same process, at the same concurrency:

- engine: `Engine.run` of a two-stage pipeline (template -> llm.text), a fresh output folder each
  time (no stored results), timed around the whole `run` (results, manifest and report included);
- script: AsyncOpenAI, an asyncio.Semaphore, asyncio.gather; nothing written.

Arms interleave per repeat (script 1, engine 1, script N, engine N; concurrency 1, 256 x 200 ms
per run and steady, only in the first `--repeats-1` repeats); medians and spreads per arm.
Then a run with 30% of the requests answered 429 or 500 by the proxy: every row must end done, with
the fault-free texts.

    .venv/bin/python benchmarks/served.py [--rows 256] [--concurrency 32] [--latency 0.2] [--repeats 5]
                                          [--repeats-1 2]
                                          [--servers 2] [--server-threads 1] [--suffix NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, git_state, machine, package_versions, spread  # noqa: E402

from aigc_pipeline import Engine  # noqa: E402
from aigc_pipeline.served.fault_proxy import FaultProxy, Faults  # noqa: E402
from aigc_pipeline.stage import item_seed  # noqa: E402

MAX_TOKENS = 2  # few tokens: the 200 ms round trip, not the CPU server's decoding, dominates


def start_servers(folder: Path, count: int, threads: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """`count` replicas of `transformers serve` (one CPU thread each by default: a request is mostly
    per-call Python overhead, and more threads per process only contend), started together."""
    ports = [free_port() for _ in range(count)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)}
    processes = [subprocess.Popen([sys.executable, "-c", "from transformers.cli.transformers import main; main()",
                                   "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env) for port in ports]
    deadline = time.monotonic() + 300
    waiting = list(ports)
    while waiting and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{waiting[0]}/health", timeout=2):
                waiting.pop(0)
        except OSError:
            time.sleep(0.5)
    if waiting:
        stop_servers(processes)
        raise SystemExit("transformers serve did not start")
    return processes, [f"http://127.0.0.1:{port}" for port in ports]


def stop_servers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pipeline(base_url: str, model: str, concurrency: int, **extra: Any) -> str:
    copy = {"backend": "openai", "base_url": base_url, "model": model, "max_tokens": MAX_TOKENS,
            "max_concurrency": concurrency, "retry_backoff": 0.05, "max_retries": 20, **extra}
    return yaml.safe_dump({"name": "served-bench", "seed": 0, "inputs": {"product": "str"}, "stages": {
        "prompt": {"uses": "template", "with": {"template": "Write about {{ product }}"}},
        "copy": {"uses": "llm.text", "inputs": {"prompt": "prompt.text"}, "with": copy}},
        "outputs": {"copy": "copy.text"}})


def run_engine(text: str, rows: Path, work: Path) -> tuple[float, list[str], dict[str, float]]:
    engine = Engine()
    graph = engine.load_text(text)
    out = Path(tempfile.mkdtemp(dir=work))
    started = time.perf_counter()
    result = engine.run(graph, rows, out)
    seconds = time.perf_counter() - started
    texts = [row.outputs.get("copy") for row in result.results]
    assert all(row.status == "done" for row in result.results), result.summary.counts
    return seconds, texts, dict(result.summary.stages["copy"].counters)


async def _script(base_url: str, model: str, prompts: list[str], seeds: list[int], concurrency: int) -> list[str]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
    slots = asyncio.Semaphore(concurrency)

    async def one(prompt: str, seed: int) -> str:
        async with slots:
            answer = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS,
                temperature=0.0, top_p=1.0, seed=seed)
            return (answer.choices[0].message.content or "").strip()

    try:
        return list(await asyncio.gather(*(one(p, s) for p, s in zip(prompts, seeds, strict=True))))
    finally:
        await client.close()


def run_script(base_url: str, model: str, prompts: list[str], seeds: list[int],
               concurrency: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    texts = asyncio.run(_script(base_url, model, prompts, seeds, concurrency))
    return time.perf_counter() - started, texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5, help="runs per arm at --concurrency (short, noisy)")
    parser.add_argument("--repeats-1", type=int, default=2, help="runs per arm at concurrency 1 (long, steady)")
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--servers", type=int, default=2, help="replicas of the server, round-robin in the proxy")
    parser.add_argument("--server-threads", type=int, default=1, help="torch (OMP) threads per server process")
    parser.add_argument("--suffix", default="", help="results/served-<date>-<suffix>.json (another run that day)")
    args = parser.parse_args()
    from aigc_pipeline.tiny import make_tiny

    work = Path(tempfile.mkdtemp(prefix="served-bench-"))
    folder = make_tiny(work / "models", ["lm"], seed=0)["lm"]
    rows = work / "rows.csv"
    products = [f"product number {i}" for i in range(args.rows)]
    rows.write_text("product\n" + "\n".join(products) + "\n", encoding="utf-8")
    prompts = [f"Write about {p}" for p in products]
    from aigc_pipeline.row_identity import identify_rows  # seeds as the engine derives them
    from aigc_pipeline.sources import stream_rows

    identities = [row.identity for row in identify_rows(list(stream_rows(rows, {"product": "str"})), None)]
    seeds = [item_seed(0, identity, "copy") for identity in identities]
    servers, upstreams = start_servers(folder, args.servers, args.server_threads)
    load_before = os.getloadavg()
    try:
        report = measure(args, upstreams, str(folder), rows, prompts, seeds, work)
    finally:
        stop_servers(servers)
    report.update(config=vars(args), versions=package_versions(["openai", "transformers", "torch", "httpx"]),
                  git=git_state(), machine=machine(), load_average_before=load_before,
                  load_average=os.getloadavg())
    name = "-".join(part for part in ("served", date.today().isoformat(), args.suffix) if part)
    target = REPO / "benchmarks" / "results" / f"{name}.json"
    target.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("rows_per_second", "ratio_engine_vs_script", "speedup", "faults")},
                     indent=2))
    print(f"written: {target}")


def measure(args: Any, upstreams: list[str], model: str, rows: Path, prompts: list[str], seeds: list[int],
            work: Path) -> dict[str, Any]:
    """Arms interleaved per repeat: script 1, engine 1, script N, engine N; then the faults run."""
    samples: dict[str, list[float]] = {"script_1": [], "engine_1": [], "script_n": [], "engine_n": []}
    texts: dict[str, list[str]] = {}
    with FaultProxy(upstreams, Faults(latency=args.latency)) as proxy:
        run_script(proxy.base_url, model, prompts[:64], seeds[:64], args.concurrency)  # warm-up: first answers
        for repeat in range(args.repeats):
            for concurrency, suffix in ((1, "1"), (args.concurrency, "n"))[repeat >= args.repeats_1:]:
                seconds, texts[f"script_{suffix}"] = run_script(proxy.base_url, model, prompts, seeds, concurrency)
                samples[f"script_{suffix}"].append(seconds)
                text = pipeline(proxy.base_url, model, concurrency)
                seconds, texts[f"engine_{suffix}"], counters = run_engine(text, rows, work)
                samples[f"engine_{suffix}"].append(seconds)
    assert texts["script_1"] == texts["script_n"] and texts["engine_1"] == texts["engine_n"]
    faults = Faults(latency=args.latency, rate=args.fault_rate, kinds=("429", "429-bare", "500"), seed=7)
    with FaultProxy(upstreams, faults) as proxy:
        seconds, fault_texts, fault_counters = run_engine(pipeline(proxy.base_url, model, args.concurrency), rows, work)
        injected = sum(1 for entry in proxy.log if entry["fault"])
    return {**ratios(samples, len(prompts), args.concurrency),
            "engine_texts_equal_script": texts["engine_n"] == texts["script_n"], "engine_counters": counters,
            "faults": {"injected": injected, "requests": len(fault_texts) + injected,
                       "all_done_and_identical": fault_texts == texts["engine_n"],
                       "retries_counted": fault_counters.get("retries"), "seconds": seconds}}


def ratios(samples: dict[str, list[float]], rows: int, concurrency: int) -> dict[str, Any]:
    medians = {arm: statistics.median(values) for arm, values in samples.items()}
    script_speedup = medians["script_1"] / medians["script_n"]
    engine_speedup = medians["engine_1"] / medians["engine_n"]
    return {
        "samples": samples, "spread": {arm: spread(values) for arm, values in samples.items()}, "medians": medians,
        "rows_per_second": {arm: rows / value for arm, value in medians.items()},
        "ratio_engine_vs_script": {"concurrency_1": medians["script_1"] / medians["engine_1"],
                                   f"concurrency_{concurrency}": medians["script_n"] / medians["engine_n"]},
        "speedup": {"script": script_speedup, "engine": engine_speedup,
                    "engine_vs_script": engine_speedup / script_speedup},
    }


if __name__ == "__main__":
    main()
