"""`brand.overlay`: a logo or a line of text on every image, at a corner or the centre.

The stage reads the upstream image (an `Artifact`, a file this run wrote), composites the
overlay and returns a new PNG as `ArtifactData`; the engine writes it. Pillow is imported when
the stage is checked or loaded, never when the plugin is imported.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aigc_pipeline import IMAGE, Artifact, ArtifactData, Device, MissingDependencyError, Stage, StageItem

from .files import BrandKitError, existing_file

if TYPE_CHECKING:
    from PIL.Image import Image

Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]


def _pil() -> Any:
    try:
        import PIL.Image
        import PIL.ImageColor
        import PIL.ImageDraw
        import PIL.ImageFont
    except ImportError:
        raise MissingDependencyError("pillow", "the brand.overlay stage") from None
    return PIL


class OverlayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    logo: str | None = Field(None, description="logo image file (a PNG with transparency works best)")
    text: str | None = Field(None, description="a line of text to draw instead of a logo")
    position: Position = "bottom-right"
    opacity: float = Field(0.8, ge=0, le=1, description="0 invisible .. 1 opaque")
    margin: int = Field(16, ge=0, description="pixels between the overlay and the image edges")
    logo_width: float = Field(0.2, gt=0, le=1, description="logo width as a fraction of the image width")
    font: str | None = Field(None, description="TrueType/OpenType font file for text (default: Pillow's own)")
    font_size: int = Field(24, ge=1, le=2000, description="text size in pixels")
    color: str = Field("white", description="text colour: a CSS name or #rrggbb")

    @field_validator("color")
    @classmethod
    def _colour(cls, color: str) -> str:
        try:
            from PIL import ImageColor
        except ImportError:  # preflight reports the missing dependency
            return color
        ImageColor.getrgb(color)  # ValueError "unknown color specifier" becomes a params error
        return color

    @model_validator(mode="after")
    def _logo_or_text(self) -> OverlayParams:
        if (self.logo is None) == (self.text is None):
            raise ValueError("give exactly one of 'logo' (an image file) or 'text'")
        if self.text is not None and not self.text.strip():
            raise ValueError("'text' must not be empty")
        return self


class OverlayStage(Stage[OverlayParams]):
    type_name = "brand.overlay"
    description = "Put a logo or a line of text on each image (corner or centre, opacity, margin)."
    Params = OverlayParams
    inputs = {"image": IMAGE}
    outputs = {"image": IMAGE}
    default_batch_size = 8

    def __init__(self, params: OverlayParams) -> None:
        super().__init__(params)
        self.mark: Image | None = None  # the logo or rendered text, full opacity applied, unscaled
        self._scaled: dict[tuple[int, int], Image] = {}

    @classmethod
    def preflight(cls, params: OverlayParams) -> None:
        """The logo (and font) exist and open, so a bad asset stops the run before any row."""
        if params.logo is not None:
            _open_logo(params.logo)
        if params.font is not None:
            _open_font(params.font, params.font_size)

    def load(self, device: Device) -> None:
        p = self.params
        self.mark = _open_logo(p.logo) if p.logo is not None else _render_text(p)
        self.mark = _with_opacity(self.mark, p.opacity)

    def unload(self) -> None:
        self.mark, self._scaled = None, {}

    def process(self, batch: list[StageItem]) -> list[StageItem]:
        for item in batch:
            image = item.inputs["image"]
            if not isinstance(image, Artifact):
                item.fail(f"expected an image file from an upstream stage, got {type(image).__name__}")
                continue
            try:
                data, size = self._compose(image.path)
            except Exception as exc:  # an unreadable image fails this row only
                item.fail(f"cannot brand image '{image.relpath}': {type(exc).__name__}: {exc}")
                continue
            item.outputs["image"] = ArtifactData(data, ".png", self._metadata(image, size))
        return batch

    def _compose(self, path: Path) -> tuple[bytes, tuple[int, int]]:
        pil = _pil()
        with pil.Image.open(path) as source:
            source.load()
            keep_alpha = source.mode in ("RGBA", "LA", "PA") or "transparency" in source.info
            base = source.convert("RGBA")
        mark = self._fitted(base.size)
        layer = pil.Image.new("RGBA", base.size, (0, 0, 0, 0))
        layer.paste(mark, _offset(self.params.position, base.size, mark.size, self.params.margin))
        composed = pil.Image.alpha_composite(base, layer)
        buffer = io.BytesIO()
        (composed if keep_alpha else composed.convert("RGB")).save(buffer, format="PNG")
        return buffer.getvalue(), base.size

    def _fitted(self, size: tuple[int, int]) -> Image:
        """The mark for an image of `size`: a logo scaled to `logo_width` and to fit inside the margins."""
        assert self.mark is not None, "load() was not called"
        if self.params.logo is None:
            return self.mark
        if size not in self._scaled:
            width, height = size
            room_w, room_h = max(1, width - 2 * self.params.margin), max(1, height - 2 * self.params.margin)
            mark_w, mark_h = self.mark.size
            scale = min(width * self.params.logo_width / mark_w, room_w / mark_w, room_h / mark_h)
            new_size = (max(1, round(mark_w * scale)), max(1, round(mark_h * scale)))
            self._scaled[size] = self.mark.resize(new_size, _pil().Image.Resampling.LANCZOS)
        return self._scaled[size]

    def _metadata(self, source: Artifact, size: tuple[int, int]) -> dict[str, Any]:
        p = self.params
        overlay = {"logo": Path(p.logo).name if p.logo else None, "text": p.text, "position": p.position,
                   "opacity": p.opacity, "margin": p.margin}
        return {**source.metadata, "source": source.relpath, "width": size[0], "height": size[1],
                "brand.overlay": overlay}


def _offset(position: str, size: tuple[int, int], mark: tuple[int, int], margin: int) -> tuple[int, int]:
    (width, height), (w, h) = size, mark
    left, right, top, bottom = margin, width - w - margin, margin, height - h - margin
    return {
        "top-left": (left, top),
        "top-right": (right, top),
        "bottom-left": (left, bottom),
        "bottom-right": (right, bottom),
        "center": ((width - w) // 2, (height - h) // 2),
    }[position]


def _open_logo(path: str) -> Image:
    file = existing_file(path, "logo", "logo")
    pil = _pil()
    try:
        with pil.Image.open(file) as logo:
            return logo.convert("RGBA")
    except Exception as exc:  # any decoder error means the same to the user
        raise BrandKitError(f"logo '{path}' is not a readable image: {type(exc).__name__}: {exc}") from exc


def _open_font(path: str, size: int) -> Any:
    file = existing_file(path, "font", "font")
    try:
        return _pil().ImageFont.truetype(str(file), size)
    except OSError as exc:
        raise BrandKitError(f"font '{path}' is not a readable TrueType/OpenType font: {exc}") from exc


def _render_text(p: OverlayParams) -> Image:
    pil = _pil()
    font = _open_font(p.font, p.font_size) if p.font else pil.ImageFont.load_default(size=p.font_size)
    assert p.text is not None
    left, top, right, bottom = pil.ImageDraw.Draw(pil.Image.new("RGBA", (1, 1))).textbbox((0, 0), p.text, font=font)
    mark = pil.Image.new("RGBA", (max(1, right - left), max(1, bottom - top)), (0, 0, 0, 0))
    red, green, blue = pil.ImageColor.getrgb(p.color)[:3]
    pil.ImageDraw.Draw(mark).text((-left, -top), p.text, font=font, fill=(red, green, blue, 255))
    return mark


def _with_opacity(mark: Image, opacity: float) -> Image:
    if opacity >= 1:
        return mark
    faded = mark.copy()
    faded.putalpha(mark.getchannel("A").point(lambda alpha: round(alpha * opacity)))
    return faded
