"""The Ray executor on a local Ray instance with 2 CPUs: the same outputs as the local executor,
per-item isolation, resume after an interruption, clear errors.

Ray starts once for this module (about 10 s) and each Ray run costs seconds of actor start-up,
so the runs here are few and small.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigc_pipeline.cli import app
from aigc_pipeline.devices import Inventory
from aigc_pipeline.executors import ray as ray_executor
from aigc_pipeline.executors.ray import RayExecutor, StepShape, gpu_share, step_shape
from aigc_pipeline.planning import make_plan
from aigc_pipeline.plugin_manager import hookimpl
from aigc_pipeline.testing import TWO_GPUS_80GB, GiB, fake_engine, run_text

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
CPU_ONLY = Inventory()


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    import ray  # the `ray` extra: scripts/setup.sh installs it, so CI runs these tests

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Ray gives each actor the one CPU it asks for, so torch computes on one thread there; the
    local run here does the same, as CPU kernels may round differently with another thread count."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli_run(*args: str) -> None:
    result = CliRunner().invoke(app, ["run", *args, "-q"])
    assert result.exit_code == 0, result.output


def same_folders(local: Path, on_ray: Path) -> None:
    """results.jsonl (and groups.jsonl) equal line for line, every artifact equal byte for byte."""
    for name in ("results.jsonl", "groups.jsonl"):
        assert (local / name).exists() == (on_ray / name).exists(), name
        if (local / name).exists():
            assert (local / name).read_text().splitlines() == (on_ray / name).read_text().splitlines(), name
    artifacts = artifact_files(local)
    assert artifacts == artifact_files(on_ray)
    for relative in artifacts:
        assert (local / relative).read_bytes() == (on_ray / relative).read_bytes(), relative


def artifact_files(out: Path) -> list[Path]:
    return sorted(path.relative_to(out) for path in (out / "artifacts").rglob("*") if path.is_file())


@pytest.mark.usefixtures("ray_instance", "one_torch_thread")
@pytest.mark.parametrize("pipeline, data", [("marketing.yaml", "marketing.csv"), ("news_batch.yaml", "news_facts.csv")])
def test_example_pipelines_give_the_local_executors_outputs(models_dir: Path, pipeline: str, data: str) -> None:
    args = [str(PIPELINES / pipeline), "-i", str(PIPELINES / "data" / data)]
    cli_run(*args, "-o", str(models_dir / "local"))
    # Relative paths (the file's models/tiny/..., this -o) mean the driver's folder on the workers too.
    cli_run(*args, "-o", "ray", "--executor", "ray")
    results = [json.loads(line) for line in (models_dir / "ray" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 8 and {r["status"] for r in results} == {"done"}
    same_folders(models_dir / "local", models_dir / "ray")


CHAIN = """
name: chain
inputs: {text: str}
stages:
  first: {uses: test.echo, inputs: {text: inputs.text}, with: {prefix: "a:"}}
  risky: {uses: test.raise_on, inputs: {text: first.text}, with: {needle: boom}}
  model: {uses: test.model, inputs: {text: risky.text}, with: {device: cpu, memory_gib: 0.1}}
outputs: {text: model.text}
"""


@pytest.mark.usefixtures("ray_instance")
def test_a_row_that_raises_fails_alone(tmp_path: Path) -> None:
    rows = [{"text": f"row {n}" + (" boom" if n == 5 else "")} for n in range(12)]
    result = run_text(CHAIN, rows, tmp_path / "ray", backend=RayExecutor(), inventory=CPU_ONLY)
    statuses = [r.status for r in result.results]
    assert statuses == ["done"] * 5 + ["failed"] + ["done"] * 6
    failed = result.results[5]
    assert failed.error == {"stage": "risky", "reason": "ValueError: found 'boom' in row 5"}
    assert result.results[0].outputs == {"text": "a:row 0+model"}
    stats = result.summary.stages
    assert (stats["risky"].done, stats["risky"].failed, stats["model"].done) == (11, 1, 11)
    assert stats["model"].loads == 1  # one actor on 2 CPUs (each CPU model actor holds its own copy)
    assert "ValueError" in (tmp_path / "ray" / "errors.log").read_text()
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["executor"] == "ray (a local instance)" and manifest["counts"]["failed"] == 1


class StopAfter:
    """Ctrl-C in the driver once `count` rows are finished (an interrupted run)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0

    @hookimpl
    def aigc_item_finished(self, result: Any) -> None:
        self.seen += 1
        if self.seen == self.count:
            raise KeyboardInterrupt


@pytest.mark.usefixtures("ray_instance")
def test_a_resumed_run_reuses_what_the_interrupted_one_finished(tmp_path: Path) -> None:
    rows = [{"text": f"row {n}"} for n in range(200)]  # 4 blocks of 64 rows or fewer
    out = tmp_path / "ray"
    first = run_text(CHAIN, rows, out, fake_engine(StopAfter(64)), backend=RayExecutor(), inventory=CPU_ONLY)
    assert first.summary.error is not None and "interrupted" in first.summary.error
    done_first = first.summary.counts["done"]
    assert 64 <= done_first < 200 and first.summary.counts["not_run"] == 200 - done_first

    again = run_text(CHAIN, rows, out, backend=RayExecutor(), inventory=CPU_ONLY)
    assert again.summary.ok and again.summary.counts["done"] == 200
    assert again.summary.stages["model"].cached >= done_first  # finished work was kept, not redone
    local = run_text(CHAIN, rows, tmp_path / "local", inventory=CPU_ONLY)
    assert [r.outputs for r in again.results] == [r.outputs for r in local.results]


DEDUPE = """
name: dedupe
inputs: {text: str}
stages:
  model: {uses: test.model, inputs: {text: inputs.text}, with: {device: cpu, memory_gib: 0.1}}
  unique: {uses: filter.text, inputs: {text: model.text}, with: {dedupe: true}, batch_size: 3}
outputs: {text: unique.text}
"""


@pytest.mark.usefixtures("ray_instance")
def test_a_run_wide_stage_sees_the_rows_in_input_order(tmp_path: Path) -> None:
    """Dedupe keeps the first of each text: on Ray it must see row 0 before row 70, as locally."""
    rows = [{"text": f"text {n % 70}"} for n in range(150)]  # blocks of 64: duplicates across blocks
    on_ray = run_text(DEDUPE, rows, tmp_path / "ray", backend=RayExecutor(), inventory=CPU_ONLY)
    local = run_text(DEDUPE, rows, tmp_path / "local", inventory=CPU_ONLY)
    assert [(r.status, r.error) for r in on_ray.results] == [(r.status, r.error) for r in local.results]
    assert on_ray.results[70].error == {"stage": "unique", "reason": "duplicate of row 0"}


@pytest.mark.usefixtures("ray_instance")
def test_a_model_that_fails_to_load_stops_the_run_with_its_stage_named(tmp_path: Path) -> None:
    text = CHAIN.replace("memory_gib: 0.1}", "memory_gib: 0.1, load_error: 'no such model: tiny/missing'}")
    result = run_text(text, [{"text": "a"}, {"text": "b"}], tmp_path / "ray", backend=RayExecutor(),
                      inventory=CPU_ONLY)
    assert result.summary.error is not None
    assert result.summary.error.startswith("stage 'model' (test.model): failed to load: OSError: no such model")
    assert [r.status for r in result.results] == ["not_run", "not_run"]


def test_without_ray_the_cli_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_executor, "ray_available", lambda: False)
    data = tmp_path / "rows.csv"
    data.write_text("product,audience\nx,y\n")
    result = CliRunner().invoke(app, ["run", str(PIPELINES / "marketing.yaml"), "-i", str(data), "-o",
                                      str(tmp_path / "out"), "--executor", "ray", "-q"])
    assert result.exit_code == 2
    assert "pip install 'aigc-pipeline[ray]'" in result.output
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize("options, message", [
    (["--executor", "dask"], "unknown executor 'dask': choose local or ray"),
    (["--executor", "local", "--ray-address", "auto"], "--ray-address needs --executor ray"),
])
def test_bad_executor_options_are_usage_errors(tmp_path: Path, options: list[str], message: str) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("product,audience\nx,y\n")
    result = CliRunner().invoke(app, ["run", str(PIPELINES / "marketing.yaml"), "-i", str(data), "-o",
                                      str(tmp_path / "out"), *options, "-q"])
    assert result.exit_code == 2 and message in result.output


SHAPES = """
name: shapes
inputs: {text: str}
stages:
  words: {uses: test.echo, inputs: {text: inputs.text}}
  llm: {uses: test.model, inputs: {text: words.text}, with: {device: gpu, memory_gib: 8}}
  big: {uses: test.model, inputs: {text: llm.text}, with: {device: gpu, memory_gib: 60}, replicas: 2}
  cpu_model: {uses: test.model, inputs: {text: big.text}, with: {device: cpu, memory_gib: 0.5}}
  unique: {uses: filter.text, inputs: {text: cpu_model.text}, with: {dedupe: true}}
outputs: {text: unique.text}
"""


def test_how_stages_map_to_ray_tasks_actors_and_gpu_shares() -> None:
    """No Ray needed: the mapping is decided from the plan, a fake 2 x 80 GiB inventory and the
    cluster's resources as Ray reports them."""
    engine = fake_engine()
    plan = make_plan(engine.load_text(SHAPES), engine.pm, inventory=TWO_GPUS_80GB)
    resources = {"CPU": 16.0, "GPU": 2.0}

    def shape(stage_id: str, rows: int = 1000) -> StepShape:
        return step_shape(plan, stage_id, rows, resources, TWO_GPUS_80GB.gpus)

    assert shape("words") == StepShape(actors=0, num_gpus=0.0)  # no model: plain tasks
    assert shape("llm") == StepShape(actors=20, num_gpus=0.1)  # 8 of 80 GiB: 20 actors fit on 2 GPUs
    assert shape("llm", rows=16) == StepShape(actors=2, num_gpus=0.1)  # no more actors than batches (8 rows)
    assert shape("big") == StepShape(actors=2, num_gpus=0.75)  # the file's replicas; 60 of 80 GiB
    assert shape("cpu_model") == StepShape(actors=8, num_gpus=0.0)  # half the CPUs: each holds a copy
    assert shape("unique") == StepShape(actors=1, num_gpus=0.0)  # run-wide: one actor, rows in order
    assert gpu_share(8 * GiB, ()) == 1.0  # the driver sees no GPU: ask for whole ones


def test_no_cluster_at_the_address_is_a_clear_error(tmp_path: Path) -> None:
    """`auto` joins a cluster started with `ray start`; there is none here."""
    import ray

    if ray.is_initialized():  # this module's local instance would be reused instead
        ray.shutdown()
    result = run_text(CHAIN, [{"text": "a"}], tmp_path / "out", backend=RayExecutor("auto"), inventory=CPU_ONLY)
    assert result.summary.error is not None
    assert result.summary.error.startswith("could not join the Ray cluster at auto: ConnectionError")
    assert [r.status for r in result.results] == ["not_run"]


@pytest.mark.usefixtures("ray_instance")
def test_a_served_stages_ledger_from_the_workers_reaches_the_summary_and_manifest(served_lm: Any,
                                                                                   tmp_path: Path) -> None:
    """Tokens, requests and retries are counted in the Ray workers; the driver adds them up."""
    from aigc_pipeline.served.fault_proxy import FaultProxy, Faults

    with FaultProxy(served_lm.base_url.removesuffix("/v1"), Faults(rate=0.3, seed=3)) as proxy:
        text = json.dumps({
            "name": "served", "inputs": {"text": "str"}, "stages": {"copy": {
                "uses": "llm.text", "inputs": {"prompt": "inputs.text"}, "batch_size": 4,
                "with": {"backend": "openai", "base_url": proxy.base_url, "model": str(served_lm.folder),
                         "max_tokens": 4, "retry_backoff": 0.01, "max_retries": 20,
                         "price": {"input": 1.0, "output": 2.0}}}},
            "outputs": {"copy": "copy.text"}})
        result = run_text(text, [{"text": f"row {n}"} for n in range(10)], tmp_path / "ray", backend=RayExecutor(),
                          inventory=CPU_ONLY)
        faulted = sum(entry["fault"] is not None for entry in proxy.log)
        requests = len(proxy.log)
    assert result.summary.counts["done"] == 10 and faulted > 0
    counters = result.summary.stages["copy"].counters
    rows = [json.loads(line) for line in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()]
    assert counters["requests"] == requests and counters["retries"] == faulted
    assert counters["prompt_tokens"] == sum(row["usage"]["copy"]["prompt_tokens"] for row in rows) > 0
    assert counters["completion_tokens"] == sum(row["usage"]["copy"]["completion_tokens"] for row in rows) > 0
    assert counters["cost_usd"] > 0
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["stages"]["copy"]["counters"] == pytest.approx(counters)


READ_ON_RAY = """
name: read_on_ray
inputs: {product: str, n: int}
key: [product]
stages:
  brief: {uses: template, with: {template: "{{ product }} number {{ n }}"}, batch_size: 8}
outputs: {brief: brief.text}
"""


@pytest.mark.usefixtures("ray_instance")
def test_an_input_file_is_read_by_ray_data_with_the_local_runs_lines_and_rejections(tmp_path: Path) -> None:
    from aigc_pipeline.executor import RowStates
    from aigc_pipeline.row_identity import IdentifiedRows
    from aigc_pipeline.sources import InputRow, stream_rows

    (tmp_path / "p.yaml").write_text(READ_ON_RAY, encoding="utf-8")
    lines = ["product,n", '"two\nlines",1', "", "bad,not a number", "a,2", "a,3"]  # a blank line, a duplicate key
    lines += [f"item {n},{n}" for n in range(150)]  # blocks of 64 rows: several read blocks
    data = tmp_path / "rows.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = stream_rows(data, {"product": "str", "n": "int"})
    assert RayExecutor().streams(RowStates(IdentifiedRows(rows, ["product"]), {}))  # read by a Ray Data task
    assert not RayExecutor().streams(RowStates(IdentifiedRows([InputRow(0, 2, {"n": 1})], None), {}))
    for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
        cli_run(str(tmp_path / "p.yaml"), "-i", str(data), "-o", str(tmp_path / name), *extra)
    local, on_ray = ((tmp_path / name / "results.jsonl").read_text().splitlines() for name in ("local", "ray"))
    assert on_ray == local and len(on_ray) == 154
    records = [json.loads(line) for line in on_ray[:4]]
    assert [(r["line"], r["status"]) for r in records] == [(2, "done"), (5, "rejected"), (6, "done"), (7, "rejected")]
    assert records[0]["outputs"]["brief"] == "two\nlines number 1"
    assert records[3]["error"]["reason"].startswith("line 7: duplicate key (product='a'): line 6 has the same")
