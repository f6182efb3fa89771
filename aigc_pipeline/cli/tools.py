"""The tool commands: `aigc models make-tiny`, `aigc models train-digits` and `aigc init plugin`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .console import err, out


def make_tiny(
    out_dir: Annotated[Path, typer.Argument(help="folder to build the models in")],
    only: Annotated[Optional[list[str]], typer.Option("--only", help="build only this kind (repeatable)")] = None,  # noqa: UP045
    seed: int = 0,
) -> None:
    """Build tiny random-weight models offline (LM, Stable Diffusion, text-to-video, TTS, classifiers): noise."""
    from ..tiny import make_tiny as build

    try:
        built = build(out_dir, only, seed)
    except ValueError as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None
    for kind, folder in built.items():
        out.print(f"{kind:<17} {folder}", highlight=False, markup=False)
    out.print("random weights: these models produce noise, not content", style="yellow")


def _default_stop_signals() -> None:
    """Give SIGTERM / SIGHUP their default action and SIGINT its KeyboardInterrupt back: main() makes
    them set a flag that only a run reads, so a long command that is not a run would ignore them."""
    import signal

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def train_digits(
    out_dir: Annotated[Path, typer.Argument(help="folder for digits-cgan/, digits-vae/, report.json")],
    gan_epochs: Annotated[int, typer.Option(min=1, help="conditional DCGAN training epochs")] = 80,
    vae_epochs: Annotated[int, typer.Option(min=1, help="VAE training epochs")] = 100,
    seed: int = 0,
    grid: Annotated[Optional[Path], typer.Option(help="also write a PNG grid of generated digits here")] = None,  # noqa: UP045
) -> None:
    """Train a conditional DCGAN and a VAE on scikit-learn's real handwritten digits (no download) and check them."""
    from ..training.digits import train_digits as train

    _default_stop_signals()  # not a run: nothing to save first, so a stop signal ends it at once
    report = train(out_dir, gan_epochs=gan_epochs, vae_epochs=vae_epochs, seed=seed, grid=grid)
    per_digit = " ".join(f"{digit}:{share:.0%}" for digit, share in enumerate(report.gan_recognised_per_digit))
    for line in (
        f"trained and checked in {report.seconds:.1f} s ({report.cpu_seconds:.1f} s of CPU, "
        f"{report.threads} torch thread) "
        f"({report.train_rows} training digits, {report.test_rows} held out)",
        f"classifier (SVM) accuracy on held-out real digits: {report.classifier_accuracy:.1%}",
        f"conditional GAN images recognised as the requested digit: {report.gan_recognised:.1%} ({per_digit})",
        f"VAE reconstruction error (held-out, mean squared, pixels in [0, 1]): {report.vae_reconstruction_mse:.4f}",
        f"generators: {out_dir / 'digits-cgan'}, {out_dir / 'digits-vae'}; figures: {out_dir / 'report.json'}",
    ):
        out.print(line, highlight=False, markup=False)


def init_plugin(
    name: Annotated[str, typer.Argument(help="distribution and folder name, e.g. aigc-watermark")],
    directory: Annotated[Path, typer.Option("--dir", help="create the plugin folder inside this folder")] = Path("."),
) -> None:
    """Create an installable plugin package: pyproject.toml with an entry point, an example stage, a test, a README."""
    from ..scaffold import scaffold_plugin

    try:
        names, files = scaffold_plugin(name, directory)
    except (ValueError, OSError) as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    folder = files[0].parent
    out.print(f"created {folder}: plugin '{names.entry_point}' with the stage type '{names.stage_type}'",
              highlight=False, markup=False, soft_wrap=True)
    for path in files:
        out.print(f"  {path}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"next:\n  pip install -e {folder}    # then 'aigc stages' lists {names.stage_type}\n"
              f"  pytest {folder}", highlight=False, markup=False, soft_wrap=True)
