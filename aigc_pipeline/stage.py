"""The Stage contract: what every stage type, built-in or plugin, provides.

A stage type is a subclass of `Stage` with:

- `type_name`: the name pipeline files use in `uses:` ("llm.text", "filter.text");
- `Params`: a pydantic model of its `with:` parameters (unknown keys are errors); the class is
  generic in it (`class MyStage(Stage[MyParams])`), so `self.params` is a `MyParams`;
- `inputs` / `outputs`: port name -> `ContentType`; `variadic_inputs` lets a stage accept any
  port names of one type (the template stage names its variables freely);
- `needs(params) -> DeviceNeeds`: device kind, memory estimate, dtype; the engine decides;
- `variables(params)`: names the stage reads by name, resolved by the graph to ports or columns;
- `preflight(params)`: cheap checks before the run (model present, program installed);
- `model_identity(params)`: what identifies the models it uses, for the run store's cache keys
  (default: every `model` param, with its `revision` and a fingerprint of its local files);
- `cacheable(params)`: False when an item's result depends on more than its own inputs (e.g. a
  dedupe across the run): the run store then never reuses its results. Default: True;
- `run_wide(params)`: True when an item's result depends on the rows before it (a dedupe): the
  stage then sees every row in one instance, in input order (no replicas; one actor on Ray);
- `__init__(params)`: cheap, stores configuration only;
- `load(device)`: loads models once, on the device the scheduler chose (returns False when
  its params need no model, so the run counts no load);
- `process(batch) -> batch`: a list of `StageItem` in, the same items out, each with its outputs
  set, or marked `fail(...)`, `drop(...)` or `flag(...)`; a stage whose items finish one by one
  calls `item.ready()` as each is done, and the engine stores it without waiting for the batch;
- `unload()`: releases what `load` took; always called, in a `finally`.
- `version`: a string (default "1") that is part of every stored result's key, with the name and
  version of the distribution that provides the stage: bump it when a change of the code changes
  what the stage produces, and a re-run recomputes that stage instead of serving old results.
- `reduces`: True for a reducing stage (many rows into one, e.g. `aggregate`): instead of
  `process`, its `reduce(items) -> list[Group]` gets every row that finished the per-row
  stages at once, and the stages downstream of it run once per group.

Optional refinements, with defaults that suit most stages: `cache_params(params)` (the params as
they enter cache keys; a stage leaves out settings that do not change a result, such as a
client's concurrency), `batch_size_for(params)` (the micro-batch size when the pipeline file gives
none), `cpu_parallel(params)` (True lets a CPU-bound stage without a model run in worker
processes, on more cores), `in_process(params)` (False when the work runs in another process, so a row in flight is
never suspected of crashing this one), `estimate(params, inputs)` (what a run would spend, for
`aigc run --dry-run`), `counters()`
(totals of the instance's countable work: requests, retries, tokens, cost; shown per stage in the
summary and the manifest) and `budget` (the run's spending cap, a `CostBudget` set by the engine
when the run has one: a stage that spends money reserves from it and marks the rows it does not
start with `item.skip(reason)`).

The contract is checked when a subclass is defined (`__init_subclass__`), so a broken plugin
fails at import with a message naming the class, not half-way through a run.
Abstract intermediate classes pass `abstract=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from .budget import CostBudget
from .content import ContentType
from .devices import Device
from .seeding import item_seed

DeviceKind = Literal["cpu", "gpu", "any"]


@dataclass(frozen=True)
class DeviceNeeds:
    """What a stage needs to run, declared as data: the scheduler places it."""

    kind: DeviceKind = "cpu"
    memory_bytes: int = 0
    dtype: str | None = None

    @property
    def model_work(self) -> bool:
        """Whether the stage does model work (it may use a GPU, or declares model memory): slow per
        item, worth its own Ray actor and small chunks locally; the rest is cheap CPU work."""
        return self.kind != "cpu" or self.memory_bytes > 0


class NoParams(BaseModel):
    """Params model for stages that take none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Group:
    """One output of a reducing stage: the rows it stands for and its output port values."""

    key: str
    members: list[int]
    outputs: dict[str, Any]


_NO_FLAGS: list[str] = []  # shared and never appended to: StageItem.flag() swaps in a fresh list


class StageItem:
    """One row as one stage sees it: its resolved input values and the outputs it sets.

    `id` tells the items of a batch apart (the row's position in this run); `row_key` is the row's
    identity (see `row_identity.py`), which the seed derives from; `take` numbers re-takes.
    Without a `row_key` (a stage tested alone) the seed derives from `id`.
    """

    __slots__ = ("id", "inputs", "outputs", "verdict", "reason", "flags", "_seed_parts", "row_key", "take", "final",
                 "on_ready")

    def __init__(
        self, item_id: int, inputs: dict[str, Any], seed_parts: tuple[int, str], row_key: str | None = None,
        take: int = 0,
    ) -> None:
        self.id = item_id
        self.row_key = row_key
        self.take = take
        self.inputs = inputs
        self.outputs: dict[str, Any] = {}
        self.verdict: str | None = None  # None: ok; "failed", "filtered" or "not_run"
        self.final = True  # False: a failure the next run tries again (not stored)
        self.reason: str | None = None
        self.flags: list[str] = _NO_FLAGS  # replaced by a list on the first flag(): saves an allocation
        self._seed_parts = seed_parts
        self.on_ready: Callable[[StageItem], None] | None = None  # set by the engine: see ready()

    @property
    def seed(self) -> int:
        """This item's seed for this stage (computed on demand: most stages never ask)."""
        run_seed, stage_id = self._seed_parts
        return item_seed(run_seed, self.id if self.row_key is None else self.row_key, stage_id, self.take)

    def fail(self, reason: str, final: bool = True) -> None:
        """Mark this item failed at this stage; downstream stages skip it. The failure is stored as
        the item's result unless `final` is False (a transient cause: the next run tries again)."""
        self.verdict, self.reason, self.final = "failed", reason, final

    def drop(self, reason: str) -> None:
        """Filter this item out (a quality gate said no); downstream stages skip it."""
        self.verdict, self.reason = "filtered", reason

    def skip(self, reason: str) -> None:
        """Leave this item not run (e.g. the run's cost cap was reached); nothing is stored, a re-run runs it."""
        self.verdict, self.reason = "not_run", reason

    def flag(self, reason: str) -> None:
        """Record a warning on this item; it goes on."""
        if self.flags is _NO_FLAGS:
            self.flags = []
        self.flags.append(reason)

    def ready(self) -> None:
        """Say this item is finished (its outputs set) before the batch returns: the engine may
        store it at once. A stage whose items finish one by one (requests to a server, answered
        in any order) calls it as each one is done, so a killed run keeps every answer it got."""
        if self.on_ready is not None:
            self.on_ready(self)


_REQUIRED = ("type_name", "Params", "inputs", "outputs")

P = TypeVar("P", bound=BaseModel)


class Stage(Generic[P]):
    """Base class of every stage type. See the module docstring for the contract.

    Generic in its params model, so `self.params` and the classmethods' `params` have the stage's
    own type: `class WatermarkStage(Stage[WatermarkParams])` with `Params = WatermarkParams`.
    """

    type_name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    inputs: ClassVar[dict[str, ContentType]]
    outputs: ClassVar[dict[str, ContentType]]
    variadic_inputs: ClassVar[ContentType | None] = None
    default_batch_size: ClassVar[int] = 1
    description: ClassVar[str] = ""
    reduces: ClassVar[bool] = False
    # True: process() runs only sandboxed Python, which cannot take the process down, so its items
    # need no in-flight markers (crash evidence) and its stored results are committed in batches.
    crash_proof: ClassVar[bool] = False
    budget: CostBudget | None = None  # the run's spending cap, set on the instance by the engine
    version: ClassVar[str] = "1"

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not abstract:
            check_stage_class(cls)

    def __init__(self, params: P) -> None:
        self.params: P = params

    @classmethod
    def variables(cls, params: P) -> set[str]:
        """Names this stage reads by name (a template's variables). Default: none.

        The graph resolves each to an input port of the same name or, failing that, to the row
        column of that name (wired implicitly); any other name is a validation error.
        """
        return set()

    @classmethod
    def preflight(cls, params: P) -> None:
        """Cheap checks before the run starts (is the model there? is a program installed?).

        Raise an `AigcError` (e.g. `ModelUnavailableError`) with a message that says how to fix
        it; the run then stops before any row is processed or any model loads. Default: nothing.
        """

    @classmethod
    def needs(cls, params: P) -> DeviceNeeds:
        """Device needs for these params. Default: CPU, no model memory."""
        return DeviceNeeds()

    @classmethod
    def model_identity(cls, params: P) -> Any:
        """JSON-able identity of the models these params use; part of every cached result's key.

        Default: each `model` param found in the params (nested ones too) with its `revision`
        and, when the model is a local folder or cached, a fingerprint of its files' sizes and
        mtimes. Override when a stage finds its weights some other way.
        """
        return _model_params(params.model_dump(mode="json"))

    @classmethod
    def cache_params(cls, params: P) -> dict[str, Any]:
        """The params as they enter every cached result's key (default: all of them)."""
        return params.model_dump(mode="json")

    @classmethod
    def in_process(cls, params: P) -> bool:
        """Whether the stage's work runs in this process, so that a row could crash it (default: True).
        False (e.g. a served model): a row in flight when the process died is not suspected of it."""
        return True

    @classmethod
    def batch_size_for(cls, params: P) -> int:
        """Items per micro-batch when the pipeline file sets no batch_size (default: default_batch_size)."""
        return cls.default_batch_size

    def counters(self) -> dict[str, float]:
        """Running totals of this instance's countable work since it was made (default: none)."""
        return {}

    @classmethod
    def estimate(cls, params: P, inputs: list[dict[str, Any]]) -> dict[str, Any] | None:
        """For a stage that spends money (`aigc run --dry-run`): given each row's input values, a dict of
        requests, prompt_tokens, completion_tokens and cost_usd (None: no price). Default None: spends nothing."""
        return None

    @classmethod
    def cacheable(cls, params: P) -> bool:
        """Whether the run store keeps this stage's results (default: True). Return False when a
        result depends on more than the item's inputs, seed, params and models (e.g. run-wide
        duplicate detection), or when recomputing is cheaper than a store lookup and record (a few
        microseconds per item: pure string checks); a resumed run then recomputes it."""
        return True

    @classmethod
    def cpu_parallel(cls, params: P) -> bool:
        """Whether copies of the stage may run in worker processes, so that it uses more than one
        core (default: False). Say True for pure-Python work that holds the GIL and needs no model,
        no device and nothing but its items (templates, regex checks): the local executor then
        forks workers for big runs (executors/worker_processes.py). Inputs and outputs must pickle."""
        return False

    @classmethod
    def run_wide(cls, params: P) -> bool:
        """Whether an item's result depends on the other items of the run (default: False), e.g.
        duplicate detection across the run. Such a stage must see every item in one instance, in
        input order: it never gets replicas, and on Ray it runs in a single actor."""
        return False

    def load(self, device: Device) -> bool | None:
        """Load models onto `device`. Default: nothing to load. Return False when these params
        need no model (a filter without a classifier): the run then counts no load."""

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        raise NotImplementedError

    def unload(self) -> None:
        """Release what `load` took. Default: nothing."""

    def reduce(self, items: list[StageItem]) -> list[Group]:
        """For reducing stages (`reduces = True`): every finished row in, one Group per output."""
        raise NotImplementedError


def _model_params(value: Any) -> list[dict[str, Any]]:
    from .model_files import find_model, model_fingerprint

    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        model = value.get("model")
        if isinstance(model, str) and model.strip():
            revision = value.get("revision")
            folder = find_model(model, revision if isinstance(revision, str) else None)
            found.append({"model": model, "revision": revision, "files": model_fingerprint(folder) if folder else None})
        for key, inner in value.items():
            if isinstance(inner, (dict, list)) and key != "model":
                found.extend(_model_params(inner))
    elif isinstance(value, list):
        for inner in value:
            found.extend(_model_params(inner))
    return found


def check_stage_class(cls: type) -> None:
    """Raise TypeError naming the class and what is wrong when it breaks the contract."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    missing = [name for name in _REQUIRED if not hasattr(cls, name)]
    if missing:
        raise TypeError(f"stage class {where} must define {', '.join(missing)}")
    problems = _contract_problems(cls)
    if problems:
        raise TypeError(f"stage class {where}: " + "; ".join(problems))


def _contract_problems(cls: Any) -> list[str]:
    problems = []
    if not isinstance(cls.type_name, str) or not _is_type_name(cls.type_name):
        problems.append(f"type_name {cls.type_name!r} must be lowercase words joined by '.' or '_'")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        problems.append("Params must be a pydantic BaseModel subclass")
    for kind in ("inputs", "outputs"):
        ports = getattr(cls, kind)
        if not isinstance(ports, dict) or not all(
            isinstance(k, str) and isinstance(v, ContentType) for k, v in ports.items()
        ):
            problems.append(f"{kind} must map port names to ContentType values")
    if cls.variadic_inputs is not None and not isinstance(cls.variadic_inputs, ContentType):
        problems.append("variadic_inputs must be a ContentType or None")
    if cls.reduces and cls.reduce is Stage.reduce:
        problems.append("a reducing stage (reduces = True) must implement reduce(items)")
    if not cls.reduces and cls.process is Stage.process:
        problems.append("process(batch) must be implemented")
    if not isinstance(cls.version, str) or not cls.version:
        problems.append(f"version {cls.version!r} must be a non-empty string")
    if not isinstance(cls.default_batch_size, int) or cls.default_batch_size < 1:
        problems.append("default_batch_size must be a positive int")
    return problems


def _is_type_name(name: str) -> bool:
    parts = name.split(".")
    return all(p and p[0].isalpha() and p.replace("_", "").isalnum() and p.islower() for p in parts)
