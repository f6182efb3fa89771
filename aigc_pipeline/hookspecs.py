"""Every hook the engine calls. Bodies are documentation only.

Plugins implement these with `aigc_pipeline.hookimpl`. The engine always calls hooks by keyword,
so an implementation may accept any subset of the arguments, in any order.

Example plugin module (registered through the entry-point group `aigc_pipeline`)::

    from aigc_pipeline import hookimpl

    @hookimpl
    def aigc_register_stages():
        return [WatermarkStage]

    @hookimpl
    def aigc_run_finish(run, summary):
        print(run.name, summary.counts)
"""

# Spec bodies are docstrings only (pluggy never calls them), so mypy's empty-body check does not apply.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .devices import Device, Inventory
    from .records import ExecutorBackend, ItemResult, RunInfo, RunSummary
    from .stage import DeviceNeeds, Stage, StageItem

hookspec = pluggy.HookspecMarker("aigc_pipeline")


@hookspec
def aigc_register_stages() -> list[type[Stage]]:
    """Return the stage classes this plugin provides (a list, possibly empty).

    Called once when the stage registry is built. Built-in stages register through this same
    hook. A type name registered by two plugins is an error naming both.

    Example::

        @hookimpl
        def aigc_register_stages():
            return [BrandOverlayStage, BrandVoiceStage]
    """


@hookspec
def aigc_register_executors() -> dict[str, Callable[..., ExecutorBackend]]:
    """Return the executor backends this plugin provides: name -> factory (a dict, possibly empty).

    `aigc run --executor NAME` calls the factory with `address=` (the `--ray-address` option, or
    None) and runs the plan with the `ExecutorBackend` it returns (`aigc_pipeline.records`: its
    `description` and `execute(plan, run, states, on_finished, stage_ids)`). The built-in `local`
    and `ray` backends register through this same hook. A factory must import its heavy
    libraries when called, not when registered. A name registered twice is an error naming both.

    Example::

        @hookimpl
        def aigc_register_executors():
            return {"dask": DaskExecutor}
    """


@hookspec
def aigc_register_generators() -> list[type]:
    """Return the generator architectures this plugin provides (a list of `torch.nn.Module` classes).

    The `latent.image` stage runs them: each class has an `architecture` name (what a model
    folder's `config.json` or the stage's `architecture:` param names), takes its `config.json`
    keys as keyword arguments, has `latent_dim` and `num_classes` (0: unconditional) attributes,
    and `generate(z, labels)` returns images (N, C, H, W) in [-1, 1]; the contract is in
    `aigc_pipeline.generators`. Built-in DCGAN, conditional DCGAN and VAE decoder register
    through this same hook. Import torch inside the implementation, not at module level, so that
    loading the plugin stays cheap. A name registered by two plugins is an error.

    Example::

        @hookimpl
        def aigc_register_generators():
            from .stylegan import StyleGAN2Generator   # architecture = "stylegan2"
            return [StyleGAN2Generator]
    """


@hookspec(firstresult=True)
def aigc_place_stage(
    stage_id: str,
    type_name: str,
    needs: DeviceNeeds,
    requested: Device | None,
    inventory: Inventory,
    placed: Mapping[str, Device],
) -> Device | None:
    """Decide the device a stage runs on; the first non-None answer wins.

    Stages are placed one at a time in graph order. `requested` is the pipeline's `device:` or
    the CLI's `--device`, when given. `inventory` is what is left: each GPU's free memory (capped
    by `--gpu-memory`) minus the memory estimates of the stages already placed on it; `placed`
    maps those stages to their devices. The built-in policy (``aigc_pipeline.device_scheduler``)
    runs last, so a plugin can override placement for some stages and return None for the rest.
    Raise `PlacementError` for an impossible request.

    Example (every model stage on the GPU with the most memory left)::

        @hookimpl
        def aigc_place_stage(needs, inventory):
            if needs.kind != "cpu" and inventory.has_gpu:
                return max(inventory.gpus, key=lambda gpu: gpu.free_bytes).device
            return None
    """


@hookspec(firstresult=True)
def aigc_process_batch(stage_id: str, stage: Stage, batch: list[StageItem]) -> list[StageItem]:
    """Run one micro-batch through a stage and return the items.

    The engine's own implementation calls ``stage.process(batch)``. Implement it with
    ``@hookimpl(wrapper=True)`` for cross-cutting work around every stage call (timing, caching,
    retries): ``result = yield`` gives the items, or raises what the stage raised.

    Example::

        @hookimpl(wrapper=True)
        def aigc_process_batch(stage_id, batch):
            start = time.perf_counter()
            items = yield
            log(stage_id, len(batch), time.perf_counter() - start)
            return items
    """


@hookspec
def aigc_run_start(run: RunInfo) -> None:
    """Called once, after validation and placement, before any stage loads.

    `run` carries the pipeline name, the number of rows, the output folder and the placement.
    """


@hookspec
def aigc_stage_progress(stage_id: str, done: int, total: int) -> None:
    """Called after each micro-batch: `done` of `total` items have passed stage `stage_id`."""


@hookspec
def aigc_item_finished(result: ItemResult) -> None:
    """Called once per row when it is done, filtered or failed (in completion order)."""


@hookspec
def aigc_run_finish(run: RunInfo, summary: RunSummary) -> None:
    """Called once at the end of a run, also when it ends early; `summary` has counts and times.

    Observer hooks must not fail a run: an exception here is reported with the plugin's name
    and the run goes on. An observer may append a line to `summary.warnings` (e.g. "webhook
    delivery failed"); the CLI prints them after the summary.
    """
