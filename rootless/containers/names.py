"""Container ids (64 hex digits) and random adjective_noun names, like podman's.

os.urandom rather than `secrets`: same randomness source, without importing hashlib, hmac and
random on rl run's start-up path.
"""

from __future__ import annotations

import os

ADJECTIVES = (
    "agile", "amazing", "bold", "brave", "bright", "busy", "calm", "clever", "cool", "crisp",
    "curious", "daring", "eager", "elated", "epic", "fervent", "festive", "fond", "friendly",
    "gallant", "gentle", "gifted", "happy", "hardy", "heuristic", "hopeful", "jolly", "keen",
    "kind", "lively", "loving", "lucid", "merry", "modest", "nifty", "nimble", "noble",
    "optimistic", "patient", "peaceful", "plucky", "quiet", "quirky", "relaxed", "serene",
    "sharp", "sleepy", "smart", "sober", "stoic", "sunny", "swift", "tender", "trusting",
    "upbeat", "vibrant", "vigilant", "vivid", "witty", "youthful", "zealous", "zen",
)  # fmt: skip

NOUNS = (
    "agnesi", "archimedes", "babbage", "bell", "bohr", "boole", "cannon", "carson", "cerf",
    "curie", "darwin", "dijkstra", "einstein", "euclid", "euler", "faraday", "fermat",
    "feynman", "franklin", "galileo", "gauss", "goodall", "hamilton", "hopper", "hypatia",
    "joliot", "kepler", "knuth", "lamarr", "leakey", "lovelace", "margulis", "maxwell",
    "mcclintock", "meitner", "mendel", "newton", "noether", "pascal", "pasteur", "planck",
    "raman", "ritchie", "shannon", "sinoussi", "somerville", "tesla", "thompson", "turing",
    "volta", "wiles", "wozniak", "yalow",
)  # fmt: skip


def new_id() -> str:
    return os.urandom(32).hex()


def _choice(words: tuple[str, ...]) -> str:
    # 8 random bytes: the modulo bias over a few dozen words is negligible.
    return words[int.from_bytes(os.urandom(8), "big") % len(words)]


def random_name() -> str:
    return f"{_choice(ADJECTIVES)}_{_choice(NOUNS)}"
