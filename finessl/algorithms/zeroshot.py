"""Zero-shot CLIP (Radford et al., "Learning Transferable Visual Models From Natural
Language Supervision", ICML 2021): classify by cosine similarity between the image
embedding and the text embeddings of "a photo of a {class}." (``template``). No
training; the run reports the test top-1 of the frozen model."""
from __future__ import annotations

from finessl.algorithms.base import Algorithm, register


@register("zeroshot", order=0)
class ZeroShot(Algorithm):
    uses_unlabeled = False
    trains = False
    zero_shot_head = True
    refuses_components = "trains nothing"
