"""The `filter.image` stage: size, aspect ratio, blank images, a classifier score; drop or flag."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aigc_pipeline.content import Artifact, ArtifactData
from aigc_pipeline.devices import CPU
from aigc_pipeline.errors import ModelUnavailableError
from aigc_pipeline.stage import StageItem
from aigc_pipeline.stages.image_filters import ImageFilterParams, ImageFilterStage

Image = pytest.importorskip("PIL.Image")


def noise(size: tuple[int, int], seed: int = 0) -> Any:
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))


def artifact(tmp_path: Path, name: str, image: Any | None = None, raw: bytes | None = None) -> Artifact:
    path = tmp_path / "artifacts" / "gen" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    else:
        assert image is not None
        image.save(path, format="PNG")
    return Artifact(f"artifacts/gen/{name}.png", path)


def run(params: dict[str, Any], images: list[Any], device: Any = CPU) -> list[StageItem]:
    checked = ImageFilterParams(**params)
    stage = ImageFilterStage(checked)
    ImageFilterStage.preflight(checked)
    stage.load(device)
    try:
        items = [StageItem(index, {"image": image}, (0, "gate")) for index, image in enumerate(images)]
        return stage.process(items)
    finally:
        stage.unload()


def test_a_blank_image_is_dropped_with_its_reason_and_a_good_one_passes_through(tmp_path: Path) -> None:
    black = artifact(tmp_path, "black", Image.new("RGB", (64, 64), "black"))
    flat = artifact(tmp_path, "flat", Image.new("RGB", (64, 64), (40, 200, 90)))
    good = artifact(tmp_path, "good", noise((64, 64)))
    items = run({}, [black, flat, good])  # the blank check is on by default
    assert [item.verdict for item in items] == ["filtered", "filtered", None]
    assert items[0].reason == "blank image: pixel standard deviation 0.00 < blank_threshold 2"
    assert items[2].outputs == {"image": good}  # the same Artifact, passed on
    assert not items[2].flags


def test_near_uniform_counts_as_blank_and_the_check_can_be_turned_off(tmp_path: Path) -> None:
    faint = Image.new("L", (32, 32), 128)
    faint.putpixel((0, 0), 140)  # one pixel off grey: std about 0.4
    faint_png = artifact(tmp_path, "faint", faint)
    assert run({}, [faint_png])[0].verdict == "filtered"
    assert run({"blank_threshold": 0.1}, [faint_png])[0].verdict is None
    assert run({"blank_threshold": None}, [artifact(tmp_path, "b", Image.new("RGB", (8, 8)))])[0].verdict is None


def test_every_failing_reason_is_recorded(tmp_path: Path) -> None:
    small_blank = artifact(tmp_path, "small", Image.new("RGB", (32, 16), "white"))
    wide = artifact(tmp_path, "wide", noise((128, 32)))
    tall = artifact(tmp_path, "tall", noise((32, 96)))
    params = {"min_width": 64, "min_height": 32, "min_aspect": 0.5, "max_aspect": 2.0}
    items = run(params, [small_blank, wide, tall])
    assert items[0].reason == ("too narrow: width 32 < min_width 64; too short: height 16 < min_height 32; "
                               "blank image: pixel standard deviation 0.00 < blank_threshold 2")
    assert items[1].reason == "aspect ratio 4 > max_aspect 2"
    assert items[2].reason == "too narrow: width 32 < min_width 64; aspect ratio 0.333 < min_aspect 0.5"


def test_on_fail_flag_passes_the_image_on_with_every_reason(tmp_path: Path) -> None:
    small = artifact(tmp_path, "small", Image.new("RGB", (16, 16)))
    (item,) = run({"min_width": 32, "on_fail": "flag"}, [small])
    assert item.verdict is None and item.outputs == {"image": small}
    assert item.flags == ["too narrow: width 16 < min_width 32",
                          "blank image: pixel standard deviation 0.00 < blank_threshold 2"]


def test_an_unreadable_image_fails_only_its_item(tmp_path: Path) -> None:
    png = io.BytesIO()
    noise((16, 16)).save(png, format="PNG")
    truncated = artifact(tmp_path, "cut", raw=png.getvalue()[:60])
    garbage = artifact(tmp_path, "junk", raw=b"not an image at all")
    in_memory = ArtifactData(png.getvalue(), ".png")  # bytes not yet written are read too
    items = run({}, [truncated, garbage, in_memory, "a string"])
    assert [item.verdict for item in items] == ["failed", "failed", None, "failed"]
    assert (items[0].reason or "").startswith("cannot read the image artifacts/gen/cut.png: ")
    assert "expected an image artifact, got str" in (items[3].reason or "")


def test_params_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"min_aspect \(2.0\) is greater than max_aspect \(1.0\)"):
        ImageFilterParams(min_aspect=2, max_aspect=1)
    with pytest.raises(ValidationError, match="extra"):
        ImageFilterParams(min_widht=3)  # type: ignore[call-arg]  # the typo is the point
    with pytest.raises(ValidationError):
        ImageFilterParams(classifier={"model": "x", "label": "nsfw", "threshold": 1.5})


def test_without_a_classifier_the_stage_is_a_cpu_stage() -> None:
    needs = ImageFilterStage.needs(ImageFilterParams())
    assert needs.kind == "cpu" and needs.memory_bytes == 0


# ----------------------------------------------------------------- classifier


@pytest.fixture(scope="module")
def classifier(tiny_model: Any) -> str:
    pytest.importorskip("transformers")
    return str(tiny_model("image-classifier"))


def test_classifier_threshold_decides_and_runs_once_per_batch(classifier: str, tmp_path: Path) -> None:
    images = [artifact(tmp_path, f"n{i}", noise((48, 40), seed=i)) for i in range(3)]
    params = {"classifier": {"model": classifier, "label": "nsfw", "threshold": 0.0}}
    stage = ImageFilterStage(ImageFilterParams(**params))
    stage.load(CPU)
    calls: list[int] = []
    real = stage.classifier
    stage.classifier = lambda batch, **kw: calls.append(len(batch)) or real(batch, **kw)  # type: ignore[func-returns-value]
    items = stage.process([StageItem(i, {"image": image}, (0, "gate")) for i, image in enumerate(images)])
    assert calls == [3]  # one classifier call for the micro-batch
    for item in items:
        assert item.verdict == "filtered"
        reason = item.reason or ""
        assert reason.startswith("classifier: 'nsfw' score 0.") and reason.endswith(">= threshold 0")
    kept = run({"classifier": {"model": classifier, "label": "nsfw", "threshold": 1.0}}, images)
    assert [item.verdict for item in kept] == [None, None, None]


def test_classifier_reasons_add_to_the_others_and_flag_mode_keeps_them(classifier: str, tmp_path: Path) -> None:
    blank = artifact(tmp_path, "blank", Image.new("RGB", (32, 32), "black"))
    params = {"classifier": {"model": classifier, "label": "safe", "threshold": 0.0}, "on_fail": "flag"}
    (item,) = run(params, [blank])
    assert item.verdict is None and item.outputs == {"image": blank}
    assert item.flags[0].startswith("blank image: ") and item.flags[1].startswith("classifier: 'safe' score ")


def test_classifier_label_and_model_are_checked_before_the_run(classifier: str, tmp_path: Path) -> None:
    params = ImageFilterParams(classifier={"model": classifier, "label": "porn"})
    with pytest.raises(ModelUnavailableError, match="has no label 'porn'; its labels: safe, nsfw"):
        ImageFilterStage.preflight(params)
    with pytest.raises(ModelUnavailableError, match="no such folder"):
        ImageFilterStage.preflight(ImageFilterParams(classifier={"model": str(tmp_path / "nope"), "label": "x"}))
    needs = ImageFilterStage.needs(ImageFilterParams(classifier={"model": classifier, "label": "nsfw"}))
    assert needs.kind == "any" and needs.memory_bytes > 0
