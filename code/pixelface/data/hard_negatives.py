"""Hard negative captions: a face's caption plus a sentence asserting an attribute none of its captions names.

Contrastive learning encodes only what tells a batch's captions apart, and a blush seldom does; NegCLIP
(Yuksekgonul et al. 2023) adds such captions as further wrong answers. The small CLIP's pretraining
(TEXT.PRETRAIN_HARD_NEGATIVES) and D's matching term (TRAIN.MISMATCH_HARD_NEGATIVES) both use them.
"""
from __future__ import annotations

import re

import torch

from pixelface.data.datasets import FaceDataset, clean_caption

# Attributes a hard negative may assert, with the predicate MMCelebA's captions use for them (and synthface's).
# A face none of whose captions names one lacks it: captions name a present attribute most of the time (70% in
# synthface), so ten silent captions leave a chance of about 0.3^10.
NEGATABLE = ((re.compile(r"\brosy cheeks\b"), "has rosy cheeks"), (re.compile(r"\bpale skin\b"), "has pale skin"),
             (re.compile(r"\blipstick\b"), "wears lipstick"), (re.compile(r"\bmakeup\b"), "wears heavy makeup"))


def subject_of(captions: list[str]) -> str:
    """The pronoun the captions use for the face ("she", "he"), or "this person"."""
    words = set(re.findall(r"\w+", " ".join(captions).lower()))
    return "she" if words & {"she", "woman"} else "he" if words & {"he", "man"} else "this person"


class HardNegatives:
    """Per train image, the sentences that assert an attribute none of its captions names (NEGATABLE)."""

    def __init__(self, dataset: FaceDataset):
        self.max_words = dataset.words
        self.sentences = []
        for i in range(len(dataset)):
            captions = dataset.captions(i)
            subject = subject_of(captions)
            self.sentences.append([f"{subject} {predicate}" for pattern, predicate in NEGATABLE
                                   if not any(pattern.search(c.lower()) for c in captions)])

    def __call__(self, indices: list[int], captions: list[str], generator: torch.Generator) -> list[str | None]:
        """For each image, its caption with one such sentence appended (a random one), or None where it has none
        or the result would exceed the caption length (cut, it would equal the caption)."""
        negatives = []
        for i, caption in zip(indices, captions):
            sentences = self.sentences[i]
            pick = int(torch.randint(len(sentences), (1,), generator=generator)) if sentences else None
            negative = None if pick is None else clean_caption(f"{caption} {sentences[pick]}", 10**6)
            negatives.append(negative if negative and len(negative.split()) <= self.max_words else None)
        return negatives
