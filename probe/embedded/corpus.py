"""The pretraining corpus: the embedded world's stand-in for web image-text pairs.

Every concept the world knows (:data:`~mma.probe.embedded.concepts.CORPUS_CONCEPTS`: shapes, objects,
letters, digits, colours, patterns, scenes, textures) drawn in the corpus look (flat colours, upright,
uncluttered, typeset letters, typeset or handwritten digits from writers 0-59), each image with several
captions built from what the picture shows: its colour, size, background colour, count and
the class noun, in varied phrasings ("two small red stars.", "a fish on a green background.", "the
number seven, handwritten."), the evaluation prompt "a photo of a {}." among them.

The corpus never contains a downstream image: the suite draws from its own seeds and looks (a test
hashes both), texture photos and handwritten digits are cut into separate parts, and three fine-grained
polygon names never occur in any caption.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .art.canvas import SEED
from .art.glyphs import PRINT_FONTS
from .cache import Arrays, cached_arrays, parallel_map
from .concepts import CONCEPTS, CORPUS_CONCEPTS, Concept
from .render import Attributes, Look, render

__all__ = ["CORPUS_LOOK", "EVAL_TEMPLATE", "Corpus", "build_corpus", "captions_for", "corpus_rng"]

EVAL_TEMPLATE = "a photo of a {}."
CORPUS_LOOK = Look(
    fill=(("flat", 1.0),),
    background=(("plain", 1.0),),
    named=0.6,
    outline_ring=0.25,
    scale=(0.55, 0.95),
    counts=(0.86, 0.09, 0.05),
    shift=0.6,
    fonts=PRINT_FONTS,
    digits=0.5,
    handwriting=(0, 60),
    noise=(0.0, 6.0),
)
_NUMBERS = {2: "two", 3: "three"}
_FAMILY_WORD = {
    "shape": "shape",
    "object": "object",
    "letter": "letter",
    "digit": "number",
    "colour": "color",
    "pattern": "pattern",
    "scene": "landscape",
    "texture": "texture",
}


@dataclass
class Corpus:
    """Corpus images (uint8 ``[N, s, s, 3]``), their concept ids, and caption tokens ``[N, captions, ctx]``."""

    images: np.ndarray
    concepts: np.ndarray
    tokens: np.ndarray
    names: tuple[str, ...]
    digest: str


def corpus_rng(part: str, i: int) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(b"corpus"), zlib.crc32(part.encode()), i])


def _article(word: str) -> str:
    if word.endswith("glasses"):  # a plural-only noun
        return "a pair of"
    return "an" if word[0] in "aeiou" and not word.startswith(("one", "uni")) else "a"


def _phrase(c: Concept, a: Attributes, rng) -> str:
    """A noun phrase for the figure: "a small red star", "two stars", "the letter k"..."""
    words = []
    if a.count == 1 and a.size and rng.random() < 0.5:
        words.append(a.size)
    if a.colour and c.family != "colour" and rng.random() < 0.6:
        words.append(a.colour)
    if c.family == "digit" and a.style and rng.random() < 0.5:
        words.append(a.style)
    noun = c.name if a.count == 1 else c.plural
    if c.family == "letter" and rng.random() < 0.5:
        noun = f"letter {c.name[-1].upper()}" if a.count == 1 else c.plural
    head = " ".join([*words, noun])
    if a.count > 1:
        return f"{_NUMBERS[a.count]} {head}"
    if c.family in ("letter", "digit") and not words and rng.random() < 0.4:
        return f"the {'number ' if c.family == 'digit' else ''}{head}"
    return f"{_article(head)} {head}"


def captions_for(c: Concept, a: Attributes, rng: np.random.Generator, n: int) -> list[str]:
    """*n* captions of one corpus image of concept *c* with attributes *a* (the first is often the eval prompt)."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            out.append(EVAL_TEMPLATE.format(c.name))  # the prompt zero-shot and the adapters use, verbatim
            continue
        if c.kind == "frame":
            form = rng.integers(5)
            name = c.name
            out.append(
                [
                    f"a picture of {_article(name)} {name}.",
                    f"{_article(name)} {name}.",
                    f"{name}, a kind of {_FAMILY_WORD[c.family]}.",
                    f"a {_FAMILY_WORD[c.family]}: {name}.",
                    f"an image of {name}.",
                ][form]
            )
            continue
        if c.family == "colour":
            form = rng.integers(4)
            out.append([f"the color {c.name}.", f"something {c.name}.", f"a {c.name} thing.", f"{c.name}."][form])
            continue
        np_ = _phrase(c, a, rng)
        extras = []
        if a.background and rng.random() < 0.5:
            extras.append(f"on {_article(a.background)} {a.background} background")
        body = " ".join([np_, *extras])
        form = rng.integers(5)
        out.append(
            [
                f"{body}.",
                f"a photo of {body}.",
                f"a drawing of {body}.",
                f"{body}, a kind of {_FAMILY_WORD[c.family]}.",
                f"a picture of {body}.",
            ][form]
        )
    return out


def _render_range(job: tuple[str, int, int, int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Corpus images ``start..stop-1`` of *part*: images, concept ids, captions (a worker's share)."""
    part, start, stop, size, captions = job
    images = np.empty((stop - start, size, size, 3), np.uint8)
    concept_ids = np.empty(stop - start, np.int32)
    texts: list[str] = []
    for j, i in enumerate(range(start, stop)):
        rng = corpus_rng(part, i)
        k = int(rng.integers(len(CORPUS_CONCEPTS)))
        c = CONCEPTS[CORPUS_CONCEPTS[k]]
        images[j], attrs = render(rng, c, CORPUS_LOOK, size, "corpus", i)
        concept_ids[j] = k
        texts += captions_for(c, attrs, rng, captions)
    return images, concept_ids, texts


def _build(n: int, size: int, part: str, captions: int, context_length: int) -> Arrays:
    # lazy: open_clip takes ~2.5 s to import on top of torch, and this module is also loaded by each spawned
    # worker of parallel_map, which renders images and never tokenizes
    from open_clip.tokenizer import SimpleTokenizer

    bounds = np.linspace(0, n, 9).astype(int)
    jobs = [(part, int(a), int(b), size, captions) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    shares = parallel_map(_render_range, jobs, work=n)
    texts = [t for _, _, share in shares for t in share]
    tokens = SimpleTokenizer(context_length=context_length)(texts).numpy().astype(np.uint16)
    return {
        "images": np.concatenate([s[0] for s in shares]),
        "concepts": np.concatenate([s[1] for s in shares]),
        "tokens": tokens.reshape(n, captions, context_length),
    }


def build_corpus(
    n: int, *, size: int = 32, part: str = "pretrain", captions: int = 4, context_length: int = 24
) -> Corpus:
    """*n* corpus images of *part* (``"pretrain"`` or ``"heldout"``: disjoint seed streams), cached."""
    arrays, digest = cached_arrays(
        f"corpus-{part}-{n}-{size}px-{captions}x{context_length}",
        lambda: _build(n, size, part, captions, context_length),
    )
    return Corpus(arrays["images"], arrays["concepts"], arrays["tokens"], CORPUS_CONCEPTS, digest)
