"""`aigc init plugin NAME`: a new plugin package that installs with pip and works at once.

The folder holds a `pyproject.toml` (setuptools, an entry point in group `aigc_pipeline`), a
package with one example stage, one passing test and a README. From a NAME like
`aigc-watermark` come the distribution (`aigc-watermark`), the package (`aigc_watermark`), the
entry-point name (`watermark`: the NAME without an `aigc-` prefix) and the example stage type
(`watermark.example`).

Names are checked before anything is written; an existing folder is never touched; the files are
written into a temporary folder that is renamed into place, so a failure leaves nothing behind.
Templates are Python strings (`string.Template`, `$name` placeholders), so nothing is read from
package data.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import secrets
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from . import __version__
from .plugin_manager import installed_plugins

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_SHORT = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME = 60


@dataclass(frozen=True)
class PluginNames:
    """Every name a new plugin needs, derived from the one the user gave."""

    distribution: str  # the folder and the pip name: aigc-watermark
    package: str  # the import name: aigc_watermark
    entry_point: str  # the plugin's registered name (`plugins: [watermark]`): watermark
    stage_type: str  # the example stage's type name: watermark.example
    engine_version: str  # the aigc-pipeline version the plugin starts from


def plugin_names(name: str) -> PluginNames:
    """Derive and check the names; ValueError says what is wrong and what would work."""
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise ValueError(
            f"plugin name {name!r} must be lowercase letters and digits, words joined by '-' or '_', starting "
            f"with a letter, at most {MAX_NAME} characters (e.g. 'aigc-watermark')")
    package = name.replace("-", "_")
    short = package.removeprefix("aigc_") or package
    if not _SHORT.match(short):
        raise ValueError(f"plugin name {name!r}: the part after 'aigc-' must start with a letter "
                         f"(e.g. 'aigc-x{short}')")
    if package == "aigc_pipeline" or package in sys.stdlib_module_names or keyword.iskeyword(package):
        raise ValueError(f"plugin name {name!r} would make a package '{package}' that hides an existing module; "
                         "choose another name")
    return PluginNames(name, package, short, f"{short}.example", __version__)


def _check_free(names: PluginNames, target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise FileExistsError(f"'{target}' already exists; nothing was written (choose another name or folder)")
    spec = importlib.util.find_spec(names.package)
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or [])
        raise ValueError(f"a module named '{names.package}' is already importable ({where}); choose another name")
    installed = installed_plugins().get(names.entry_point)
    if installed is not None:
        dist = f" by distribution '{installed.dist.name}'" if installed.dist else ""
        raise ValueError(f"a plugin named '{names.entry_point}' is already installed{dist}; choose another name")


def scaffold_plugin(name: str, parent: str | Path = ".") -> tuple[PluginNames, list[Path]]:
    """Create the plugin folder `parent/name`; return its names and the files written (in order)."""
    names = plugin_names(name)
    parent = Path(parent)
    if not parent.is_dir():
        raise FileNotFoundError(f"folder '{parent}' does not exist")
    target = parent / names.distribution
    _check_free(names, target)
    values = asdict(names)
    staging = parent / f".{names.distribution}-{secrets.token_hex(4)}.tmp"
    staging.mkdir()  # not mkdtemp: the folder gets the usual permissions (umask), not 0700
    try:
        for relpath, template in _files(names).items():
            path = staging / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template).substitute(values), encoding="utf-8")
        staging.rename(target)  # refuses a non-empty target; we checked it does not exist
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return names, [target / relpath for relpath in _files(names)]


def _files(names: PluginNames) -> dict[str, str]:
    return {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{names.package}/__init__.py": PACKAGE_INIT,
        f"{names.package}/stages.py": STAGES,
        "tests/test_stages.py": TEST,
    }


PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "An aigc-pipeline plugin: the $stage_type stage."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["aigc-pipeline>=$engine_version"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The engine finds the plugin through this entry point: `aigc stages` lists its stage types,
# and a pipeline file may name it under `plugins: [$entry_point]`.
[project.entry-points.aigc_pipeline]
$entry_point = "$package"

[tool.setuptools.packages.find]
include = ["$package*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "--strict-markers -ra"
"""

PACKAGE_INIT = '''\
"""$distribution: an aigc-pipeline plugin, registered as '$entry_point'."""

from __future__ import annotations

from aigc_pipeline import Stage, hookimpl

from .stages import ExampleStage

__version__ = "0.1.0"


@hookimpl
def aigc_register_stages() -> list[type[Stage]]:
    """The stage types this plugin provides. Other hooks: see aigc_pipeline/hookspecs.py."""
    return [ExampleStage]
'''

STAGES = '''\
"""The stages of $distribution. Start from `ExampleStage` and make it yours.

The stage contract (aigc_pipeline/stage.py): a `type_name`, a pydantic `Params` model (the
stage's `with:` in a pipeline file), typed `inputs` and `outputs` ports, and `process(batch)`:
a list of StageItem in, the same items out, each with its outputs set, or marked
`item.fail(reason)`, `item.drop(reason)` or `item.flag(reason)`. Optional: `needs(params)`,
`preflight(params)`, `load(device)` (load models here, not in `__init__`, which only keeps
the params), `unload()`.
"""

from __future__ import annotations

from aigc_pipeline import TEXT, Stage, StageItem
from pydantic import BaseModel, ConfigDict, Field


class ExampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in `with:` is an error, not ignored

    suffix: str = Field("!", description="added to the end of the text")


class ExampleStage(Stage[ExampleParams]):  # generic in its params: `self.params` is an ExampleParams
    type_name = "$stage_type"
    description = "Example: upper-case the text and add a suffix (replace me)."
    Params = ExampleParams
    inputs = {"text": TEXT}
    outputs = {"text": TEXT}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            text = item.inputs["text"]
            if not text.strip():
                item.drop("empty text")  # this row is filtered, with the reason; the others go on
                continue
            item.outputs["text"] = text.upper() + self.params.suffix
        return batch
'''

TEST = '''\
"""The example stage in a real pipeline, loaded through the plugin's entry point.

Install the plugin first (`pip install -e .`): pipelines find plugins by their entry point.
"""

from __future__ import annotations

from pathlib import Path

from aigc_pipeline.testing import run_text

PIPELINE = """\\
name: example
inputs: {product: str}
plugins: [$entry_point]
stages:
  loud: {uses: $stage_type, inputs: {text: inputs.product}, with: {suffix: "!!"}}
outputs: {loud: loud.text}
"""


def test_example_stage_runs_in_a_pipeline(tmp_path: Path) -> None:
    result = run_text(PIPELINE, [{"product": "kettle"}, {"product": " "}], tmp_path / "out")
    assert result.summary.ok
    assert [(r.status, r.outputs, r.error) for r in result.results] == [
        ("done", {"loud": "KETTLE!!"}, None),
        ("filtered", {}, {"stage": "loud", "reason": "empty text"}),
    ]
'''

README = """\
# $distribution

An aigc-pipeline plugin, registered as `$entry_point`.
It provides the stage type `$stage_type` (an example: it upper-cases text and adds a suffix).

```bash
pip install -e .              # in this folder, into the environment that has aigc-pipeline
aigc stages                   # lists $stage_type  ($entry_point)
pytest                        # runs tests/ (the plugin must be installed: pipelines find it by entry point)
```

In a pipeline file:

```yaml
plugins: [$entry_point]
stages:
  loud: {uses: $stage_type, inputs: {text: inputs.product}, with: {suffix: "!!"}}
```

Next: rename `ExampleStage` and `$stage_type` in `$package/stages.py`, give it real params and
ports, and register more stages (or other hooks: see `aigc_pipeline/hookspecs.py`) in
`$package/__init__.py`. The guide: "Writing a plugin" (`docs/writing-a-plugin.md` in the
aigc-pipeline repository). Fakes for tests: `aigc_pipeline.testing`.
"""
