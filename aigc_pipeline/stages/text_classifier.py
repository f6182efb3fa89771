"""filter.text's classifier check: a sequence-classification model scoring one label per text.

Loaded by the stage's `load` (transformers is imported there, not here); sized for `needs` from
the safetensors headers with `CLASSIFIER_HEADROOM`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

CLASSIFIER_HEADROOM = 1.2  # the weights plus 20% for activations
CLASSIFIER_HEADROOM_BYTES = 64 * 2**20


def model_labels(folder: Path) -> list[str]:
    """The labels in a transformers config.json: its id2label, else LABEL_0.. from num_labels."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(config, dict):
        return []
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return [str(label) for _, label in sorted(id2label.items(), key=lambda pair: int(pair[0]))]
    return [f"LABEL_{index}" for index in range(int(config.get("num_labels", 2)))]


def unknown_label(label: str, model: str, labels: list[str]) -> str:
    return f"classifier '{model}' has no label '{label}'; its labels: {', '.join(labels)}"


class TextClassifier:
    """A sequence-classification model scoring one label: probabilities by softmax, or by sigmoid for
    a multi-label model (problem_type multi_label_classification, e.g. toxicity models) or one logit."""

    def __init__(self, folder: Path, check: Any, device: Any) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        remote = check.trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, trust_remote_code=remote, use_safetensors=None if check.allow_pickle else True
        )
        labels = [str(model.config.id2label[i]) for i in sorted(model.config.id2label)]
        if check.label not in labels:
            raise ValueError(unknown_label(check.label, check.model, labels))
        self.index = labels.index(check.label)
        self.sigmoid = model.config.problem_type == "multi_label_classification" or len(labels) == 1
        self.model = model.to(str(device)).eval()
        self.device, self.batch_size = str(device), check.batch_size
        limit = getattr(self.tokenizer, "model_max_length", None) or check.max_length
        self.max_length = min(check.max_length, int(limit))

    def scores(self, texts: list[str]) -> list[float]:
        """The label's score for each text, run in batches of `batch_size` (longest texts together)."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        scores = [math.nan] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = self.tokenizer([texts[i] for i in chunk], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model(**encoded).logits.float()
            probs = logits.sigmoid() if self.sigmoid else logits.softmax(dim=-1)
            for i, score in zip(chunk, probs[:, self.index].cpu().tolist(), strict=True):
                scores[i] = float(score)
        return scores

    def close(self) -> None:
        del self.model  # the engine frees the cached GPU memory once the stage has unloaded
