"""Captions in the MMCelebA sentence style: "This woman has blond hair, and wavy hair. She wears
lipstick." Phrases come in three groups (has / is / wearing); the first sentence may join two
groups with "and", later sentences start with the pronoun; lists read "a, b, and c".

make_captions writes them from an attribute dict; caption_attributes reads the stated attributes back."""
from __future__ import annotations

import re

import numpy as np

from .attributes import ATTRIBUTES, check_attributes


# Boolean attributes as caption phrases, by verb: "has ..." / "is wearing ..." (or "wears ...").
_HAS_PHRASES = {"mouth_open": "mouth slightly open", "big_lips": "big lips", "big_nose": "big nose",
                "bushy_eyebrows": "bushy eyebrows", "arched_eyebrows": "arched eyebrows",
                "narrow_eyes": "narrow eyes", "pale_skin": "pale skin", "rosy_cheeks": "rosy cheeks",
                "eyeglasses": "eyeglasses"}
_WEAR_PHRASES = {"lipstick": "lipstick", "heavy_makeup": "heavy makeup", "earrings": "earrings",
                 "necklace": "necklace", "hat": "hat"}


def _phrases(attrs: dict) -> dict[str, list[str]]:
    """The true attributes as caption phrases, by verb group (beard has a sentence of its own)."""
    has, is_ = [], []
    if attrs["hair_style"] != "bald":
        has.append(f"{attrs['hair_color']} hair")
        has.append("bangs" if attrs["hair_style"] == "bangs" else f"{attrs['hair_style']} hair")
    else:
        is_.append("bald")
    has += [phrase for key, phrase in _HAS_PHRASES.items() if attrs[key]]
    if attrs["smiling"]:
        is_.append("smiling")
    wears = [phrase for key, phrase in _WEAR_PHRASES.items() if attrs[key]]
    return {"has": has, "is": is_, "wears": wears}


# How often a true phrase is mentioned: colour-only attributes often, so the text is informative
# about what the mask cannot show.
_MENTION_P = {"hair": 0.85, "lipstick": 0.7, "heavy makeup": 0.7, "pale skin": 0.7, "rosy cheeks": 0.7,
              "beard": 0.7}


def _mention_p(phrase: str, attrs: dict) -> float:
    if phrase == f"{attrs['hair_color']} hair":
        return _MENTION_P["hair"]
    return _MENTION_P.get(phrase, 0.45)


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def _predicate(group: str, items: list[str], rng) -> str:
    if group == "wears":
        return ("is wearing " if rng.random() < 0.5 else "wears ") + _listing(items)
    return ("has " if group == "has" else "is ") + _listing(items)


def _one_caption(attrs: dict, rng) -> str:
    female = attrs["gender"] == "female"
    noun, pronoun = ("woman", "She") if female else ("man", "He")
    phrases = _phrases(attrs)
    groups = {name: [p for p in items if rng.random() < _mention_p(p, attrs)] for name, items in phrases.items()}
    if not any(groups.values()):                              # always say something true
        name = "has" if phrases["has"] else "is"
        groups[name] = phrases[name][:1]
    for items in groups.values():
        rng.shuffle(items)
    clauses = [(name, items) for name, items in groups.items() if items]
    rng.shuffle(clauses)
    adjectives = []
    if clauses[0][0] == "is" and len(clauses) > 1 and rng.random() < 0.3:
        adjectives = clauses.pop(0)[1]                        # "This smiling woman has ..."
    predicates = [_predicate(name, items, rng) for name, items in clauses]
    first = predicates.pop(0)
    if predicates and rng.random() < 0.4:
        first += " and " + predicates.pop(0)                  # "She is smiling and has ..."
    if not female and rng.random() < _MENTION_P["beard"]:     # a sentence of its own, as in MMCelebA
        beard = "has beard" if attrs["beard"] else "has no beard"
        predicates.insert(int(rng.integers(0, len(predicates) + 1)), beard)
    sentences = [f"{_subject(noun, pronoun, adjectives, rng)} {first}."] + [f"{pronoun} {p}." for p in predicates]
    return " ".join(sentences)


def _subject(noun: str, pronoun: str, adjectives: list[str], rng) -> str:
    if adjectives:
        return f"This {_listing(adjectives)} {noun if rng.random() < 0.6 else 'person'}"
    r = rng.random()
    if r < 0.25:
        return pronoun
    return ("This " if rng.random() < 0.5 else "The ") + ("person" if r < 0.62 else noun)


def make_captions(attrs: dict, rng: np.random.Generator, n: int = 10) -> list[str]:
    """`n` captions, each mentioning a random subset of the true attributes, distinct where the
    attributes allow it (faces with very few attributes may repeat a phrasing)."""
    check_attributes(attrs)
    captions: list[str] = []
    for _ in range(50 * n):
        caption = _one_caption(attrs, rng)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == n:
            return captions
    return [captions[i % len(captions)] for i in range(n)]


def caption_attributes(caption: str) -> dict:
    """The attributes a caption states (keys of ATTRIBUTES; absent keys: not mentioned)."""
    text = caption.lower()
    words = set(re.findall(r"\w+", text))
    found = {}
    if words & {"woman", "she"}:
        found["gender"] = "female"
    elif words & {"man", "he"}:
        found["gender"] = "male"
    for color in ATTRIBUTES["hair_color"]:
        if f"{color} hair" in text:
            found["hair_color"] = color
    for style, phrase in (("straight", "straight hair"), ("wavy", "wavy hair"), ("bangs", "bangs"), ("bald", "bald")):
        if re.search(rf"\b{phrase}\b", text):
            found["hair_style"] = style
    for key, phrase in {**_HAS_PHRASES, **_WEAR_PHRASES, "smiling": "smiling"}.items():
        if re.search(rf"\b{phrase}\b", text):
            found[key] = True
    if "no beard" in text:
        found["beard"] = False
    elif re.search(r"\bbeard\b", text):
        found["beard"] = True
    return found
