"""`aigc models train-digits DIR`: a conditional DCGAN and a VAE trained on scikit-learn's digits.

`sklearn.datasets.load_digits` is 1,797 real handwritten digits (8x8 pixels, 17 grey levels) that
ship inside scikit-learn: no download. They are split into training and held-out rows (stratified,
seeded). On the training rows this trains

- a class-conditional DCGAN, as an auxiliary-classifier GAN (Odena et al. 2017): the
  discriminator also predicts the digit, which keeps each image the digit it was asked for;
- a VAE (an MLP encoder and decoder, 8 latent dimensions).

Then it checks the result honestly: an SVM (scikit-learn) trained on the real training digits is
scored on the held-out real digits, then asked which digit each conditional-GAN image shows; the
share it reads as the requested digit is reported, with the VAE's mean squared reconstruction
error on the held-out digits (pixels in [0, 1]). The generators are saved in the `latent.image`
stage's format (`DIR/digits-cgan`, `DIR/digits-vae`), the figures in `DIR/report.json`, and a grid
of generated digits (one row per digit) as a PNG.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .digits_models import DigitsData, GanDiscriminator, load_digits_data, vae_loss

LATENT_DIM = 32
VAE_LATENT_DIM = 8
SAMPLES_PER_DIGIT = 100


@dataclass
class DigitsReport:
    seconds: float  # wall-clock time of the whole command's training and checks
    cpu_seconds: float  # CPU time of this process meanwhile (what a busy machine does not inflate)
    threads: int
    gan_epochs: int
    vae_epochs: int
    classifier_accuracy: float  # held-out real digits
    gan_recognised: float  # share of conditional-GAN images the classifier reads as the requested digit
    gan_recognised_per_digit: list[float]
    vae_reconstruction_mse: float  # held-out digits, pixels in [0, 1]
    train_rows: int
    test_rows: int


def train_digits(out_dir: str | Path, gan_epochs: int = 80, vae_epochs: int = 100, seed: int = 0,
                 grid: str | Path | None = None) -> DigitsReport:
    """Train both generators, evaluate them, save them and the report under `out_dir`."""
    import torch

    start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # layers this small lose more to thread hand-offs than they gain (measured: 2 threads
    try:                      # took several times the CPU time of 1 on a busy 2-core machine)
        report = _train_and_check(out, gan_epochs, vae_epochs, seed, grid)
    finally:
        torch.set_num_threads(threads)
    report.seconds = round(time.perf_counter() - start, 1)
    report.cpu_seconds = round(time.process_time() - cpu_start, 1)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def _train_and_check(out: Path, gan_epochs: int, vae_epochs: int, seed: int, grid: str | Path | None) -> DigitsReport:
    import torch

    from ..generators.folders import save_generator

    torch.manual_seed(seed)
    data = load_digits_data(seed)
    classifier, accuracy = train_classifier(data)
    generator = train_cgan(data, gan_epochs, seed)
    encoder, decoder = train_vae(data, vae_epochs, seed)
    per_digit = recognised_per_digit(generator, classifier, seed)
    report = DigitsReport(
        seconds=0.0, cpu_seconds=0.0, threads=torch.get_num_threads(), gan_epochs=gan_epochs, vae_epochs=vae_epochs,
        classifier_accuracy=accuracy, gan_recognised=sum(per_digit) / len(per_digit),
        gan_recognised_per_digit=per_digit, vae_reconstruction_mse=reconstruction_mse(encoder, decoder, data),
        train_rows=len(data.train_y), test_rows=len(data.test_y),
    )
    save_generator(generator, out / "digits-cgan")
    save_generator(decoder, out / "digits-vae")
    if grid is not None:
        write_grid(generator, Path(grid), seed)
    return report


def train_classifier(data: DigitsData) -> tuple[Any, float]:
    """An RBF SVM on the real training digits, and its accuracy on the held-out real digits."""
    from sklearn.svm import SVC

    classifier = SVC(gamma=0.001, C=10.0).fit(data.train_x.reshape(len(data.train_x), -1).numpy() * 16,
                                              data.train_y.numpy())
    predicted = classifier.predict(data.test_x.reshape(len(data.test_x), -1).numpy() * 16)
    return classifier, float((predicted == data.test_y.numpy()).mean())


def train_cgan(data: DigitsData, epochs: int, seed: int, batch_size: int = 128) -> Any:
    """An auxiliary-classifier conditional DCGAN on the training digits (pixels scaled to [-1, 1])."""
    import torch
    from torch import nn

    from ..generators.dcgan import ConditionalDCGANGenerator

    torch.manual_seed(seed)
    generator = ConditionalDCGANGenerator(latent_dim=LATENT_DIM, num_classes=10, embed_dim=16, image_size=8,
                                          channels=1, base_channels=64)
    critic = GanDiscriminator(width=32)
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce, ce = nn.BCEWithLogitsLoss(), nn.CrossEntropyLoss()
    images, labels = data.train_x * 2 - 1, data.train_y
    shuffle = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(images), generator=shuffle).split(batch_size):
            real, real_labels = images[index], labels[index]
            fake_labels = torch.randint(0, 10, (len(index),))
            fake = generator.generate(torch.randn(len(index), LATENT_DIM), fake_labels)
            d_opt.zero_grad()
            real_score, real_class = critic(real)
            fake_score, fake_class = critic(fake.detach())
            d_loss = (bce(real_score, torch.full_like(real_score, 0.9)) + bce(fake_score, torch.zeros_like(fake_score))
                      + ce(real_class, real_labels) + ce(fake_class, fake_labels))
            d_loss.backward()
            d_opt.step()
            g_opt.zero_grad()
            score, predicted_class = critic(fake)
            g_loss = bce(score, torch.ones_like(score)) + ce(predicted_class, fake_labels)
            g_loss.backward()
            g_opt.step()
    return generator.eval()


def train_vae(data: DigitsData, epochs: int, seed: int, batch_size: int = 64) -> tuple[Any, Any]:
    """A VAE (MLP encoder and decoder) on the training digits; returns (encoder, decoder)."""
    import torch

    from ..generators.vae import VAEDecoder, VAEEncoder

    torch.manual_seed(seed)
    encoder, decoder = VAEEncoder(latent_dim=VAE_LATENT_DIM), VAEDecoder(latent_dim=VAE_LATENT_DIM)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    shuffle = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(data.train_x), generator=shuffle).split(batch_size):
            batch = data.train_x[index]
            mean, log_var = encoder(batch)
            z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
            optimizer.zero_grad()
            vae_loss(decoder.decode(z), batch, mean, log_var).backward()
            optimizer.step()
    return encoder.eval(), decoder.eval()


def recognised_per_digit(generator: Any, classifier: Any, seed: int) -> list[float]:
    """For each digit, the share of SAMPLES_PER_DIGIT generated images the classifier reads as it."""
    import torch

    shares = []
    noise = torch.Generator().manual_seed(seed + 1)
    with torch.inference_mode():
        for digit in range(10):
            z = torch.randn(SAMPLES_PER_DIGIT, LATENT_DIM, generator=noise)
            images = (generator.generate(z, torch.full((SAMPLES_PER_DIGIT,), digit)) + 1) / 2
            predicted = classifier.predict(images.reshape(SAMPLES_PER_DIGIT, -1).numpy() * 16)
            shares.append(float((predicted == digit).mean()))
    return shares


def reconstruction_mse(encoder: Any, decoder: Any, data: DigitsData) -> float:
    """Mean squared error per pixel (in [0, 1]) of the held-out digits through the VAE (latent mean)."""
    import torch

    with torch.inference_mode():
        mean, _ = encoder(data.test_x)
        return float(((decoder.decode(mean) - data.test_x) ** 2).mean())


def write_grid(generator: Any, path: Path, seed: int, columns: int = 10, scale: int = 4) -> Path:
    """A PNG of generated digits: row d holds `columns` images of digit d, each enlarged `scale` times."""
    import torch
    from PIL import Image

    noise = torch.Generator().manual_seed(seed + 2)
    with torch.inference_mode():
        z = torch.randn(10 * columns, LATENT_DIM, generator=noise)
        images = generator.generate(z, torch.arange(10).repeat_interleave(columns))
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, 0]
    framed = torch.nn.functional.pad(pixels, (1, 1, 1, 1), value=96)  # a grey line between the digits
    tiles = framed.reshape(10, columns, 10, 10).permute(0, 2, 1, 3).reshape(100, columns * 10)
    image = Image.fromarray(tiles.numpy(), "L").resize((columns * 10 * scale, 100 * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
