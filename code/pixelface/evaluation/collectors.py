"""Collectors: fed every batch of the main generated set, each gathers what its metrics need."""
from __future__ import annotations


import torch

from pixelface.data.images import to_uint8
from pixelface.data.masks import NUM_CLASSES, confusion_matrix
from pixelface.data.synthface import COLOR_ONLY, caption_attributes, predict_attributes
from pixelface.evaluation.context import EvalContext
from pixelface.evaluation.extractors import find_inception_weights
from pixelface.evaluation.formulas import high_frequency_map, region_edges, region_texture
from pixelface.evaluation.parser import load_parser


class _FeatureCollector:
    def __init__(self, extractor):
        self.extractor, self.parts = extractor, []

    def update(self, images, batch):
        self.parts.append(self.extractor(images))

    def value(self) -> torch.Tensor:
        return torch.cat(self.parts)


class _CaptionCollector:
    def __init__(self, text_encoder):
        self.encoder, self.parts = text_encoder, []

    def update(self, images, batch):
        self.parts.append(self.encoder.embed_text(list(batch["caption"])).float().cpu())

    def value(self) -> torch.Tensor:
        return torch.cat(self.parts)


class _ConfusionCollector:
    def __init__(self, parser):
        self.parser = parser
        self.confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)

    def update(self, images, batch):
        self.confusion += confusion_matrix(self.parser.predict(images).cpu(), batch["labels"])

    def value(self) -> torch.Tensor:
        return self.confusion


class _TextureCollector:
    """region_texture of each generated face and of its real source face, over the input mask's regions."""

    def __init__(self):
        self.parts = {"fake": [], "real": []}

    def update(self, images, batch):
        self.parts["fake"].append(region_texture(images, batch["labels"]))
        self.parts["real"].append(region_texture(batch["image"].float(), batch["labels"]))

    def value(self) -> dict[str, torch.Tensor]:
        return {kind: torch.cat(parts) for kind, parts in self.parts.items()}


class _SharpnessCollector:
    """high_frequency_map of each generated face and of its real source face: per image its mean over the face,
    its sum over the pixels at a region edge of the mask and its sum over the rest, (B,3) per kind."""

    def __init__(self):
        self.parts = {"fake": [], "real": []}

    def update(self, images, batch):
        edges = region_edges(batch["labels"]).float()
        for kind, pictures in (("fake", images), ("real", batch["image"])):
            energy = high_frequency_map(pictures)
            at_edges = (energy * edges).sum((1, 2))
            inside = energy.sum((1, 2)) - at_edges
            self.parts[kind].append(torch.stack((energy.mean((1, 2)), at_edges, inside), 1))

    def value(self) -> dict[str, torch.Tensor]:
        return {kind: torch.cat(parts) for kind, parts in self.parts.items()}


class _AttributeCollector:
    """Whether each generated face, and its real source face, shows the colour attributes its caption states
    (hits), and how often each shows a yes/no attribute that its caption does not mention (unasked): a
    generator that paints lipstick on every face would score 1 on the stated ones alone."""

    def __init__(self, caption_attributes, predict_attributes):
        self.stated, self.predict = caption_attributes, predict_attributes
        self.hits = {"fake": {}, "real": {}}
        self.unasked = {"fake": {}, "real": {}}

    def update(self, images, batch):
        fakes = to_uint8(images).permute(0, 2, 3, 1).numpy()
        reals = to_uint8(batch["image"]).permute(0, 2, 3, 1).numpy()
        for fake, real, labels, caption in zip(fakes, reals, batch["labels"].numpy(), batch["caption"]):
            asked = self.stated(caption)
            for kind, image in (("fake", fake), ("real", real)):
                shown = self.predict(image, labels)
                for name in COLOR_ONLY:
                    if name not in shown:   # a region too small to judge
                        continue
                    if name in asked:
                        correct = shown[name] == asked[name]
                        self.hits[kind].setdefault(name, []).append(bool(correct))
                        if name == "hair_color":  # also per asked colour: one colour can lag the others
                            self.hits[kind].setdefault(f"hair_color/{asked[name]}", []).append(bool(correct))
                    elif isinstance(shown[name], bool):
                        self.unasked[kind].setdefault(name, []).append(shown[name])

    def value(self) -> dict[str, dict[str, dict[str, list[bool]]]]:
        return {"hits": self.hits, "unasked": self.unasked}


def _parser_collector(ctx: EvalContext):

    ctx.settings["parser"] = str(ctx.parser_path)
    return _ConfusionCollector(load_parser(ctx.parser_path, ctx.device))


def _attribute_collector(ctx: EvalContext):

    return _AttributeCollector(caption_attributes, predict_attributes)


COLLECTORS = {
    "inception": lambda ctx: _FeatureCollector(ctx.extractor("inception")),
    "clip": lambda ctx: _FeatureCollector(ctx.extractor("clip")),
    "parser_features": lambda ctx: _FeatureCollector(ctx.extractor("parser_features")),
    "sharpness": lambda ctx: _SharpnessCollector(),
    "captions": lambda ctx: _CaptionCollector(ctx.text_encoder),
    "parser": _parser_collector,
    "attributes": _attribute_collector,
    "texture": lambda ctx: _TextureCollector(),
}


def check_need(ctx: EvalContext, need: str) -> None:
    """Raise the one clear error that says why `need` cannot be met on this machine or dataset."""
    if need == "inception":
        find_inception_weights(ctx.inception_path)
    elif need in ("parser", "parser_features") and not ctx.parser_path.is_file():
        raise FileNotFoundError(f"no face parser at {ctx.parser_path}; train one with scripts/train_parser.py "
                                f"--out {ctx.parser_path}, or pass another path")
    elif need == "attributes" and not ctx.attributes_path().is_file():
        raise FileNotFoundError(f"{ctx.attributes_path()} does not exist: attribute accuracy needs a dataset with "
                                f"attribute labels (synthface)")
    elif need == "seeds" and len(ctx.seeds) < 2:
        raise ValueError(f"diversity compares images across seeds and needs at least two, got {ctx.seeds}")
