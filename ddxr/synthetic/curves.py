"""The known formulas behind generated data: checkpoint grids, score and perplexity curves.

Scores rise with training compute (6 × N × tokens) along a logistic curve in log-compute, shifted by a fixed quality
per recipe, so the generated data has a known ranking of recipes at every scale. All functions are vectorized over
numpy arrays; randomness (seed noise) is added by the callers from a seeded generator.
"""

from __future__ import annotations

import numpy as np

from ddxr.vocabulary import DATA, MMLU_TASKS, SIZES

#: Chance level and ceiling of each task's primary score.
TASK_RANGE = {
    "arc_challenge": (0.25, 0.55),
    "arc_easy": (0.25, 0.80),
    "boolq": (0.55, 0.75),
    "csqa": (0.20, 0.65),
    "hellaswag": (0.25, 0.75),
    "openbookqa": (0.25, 0.50),
    "piqa": (0.50, 0.78),
    "socialiqa": (0.33, 0.55),
    "winogrande": (0.50, 0.65),
    **dict.fromkeys(MMLU_TASKS, (0.25, 0.40)),
}

#: Quality of each recipe in [-1, 1]: shifts its curves, so its rank is known. Evenly spread, in a fixed order.
RECIPE_QUALITY = dict(
    zip(DATA, np.linspace(-1.0, 1.0, len(DATA))[np.argsort(np.arange(len(DATA)) * 7 % 25)], strict=True)
)

#: Baseline (irreducible) perplexity of each perplexity set.
PPL_FLOOR = {
    "wikitext_103": 9.0,
    "pile": 8.0,
    "m2d2_s2orc": 11.0,
    "ice": 10.0,
    "dolma_wiki": 7.5,
    "dolma_stack": 3.0,
    "dolma_reddit": 14.0,
    "dolma_pes2o": 8.5,
    "dolma_common-crawl": 12.0,
    "dolma_books": 10.5,
    "c4_en": 13.0,
}

_COMPUTE_MIDPOINT = 19.3  # log10 FLOPs where a task is half way from chance to ceiling
_COMPUTE_SLOPE = 1.1
_QUALITY_SHIFT = 0.35


def checkpoint_steps(params: str) -> np.ndarray:
    """Checkpoint steps of one size: 0, every 1,250 steps (2,500 for 750M and 1B), then the final step."""
    final = int(SIZES.loc[params, "final_step"])
    every = 2500 if params in ("750M", "1B") else 1250
    return np.unique(np.append(np.arange(0, final, every), final))


def size_constant(params: np.ndarray | str, column: str) -> np.ndarray:
    """Return a column of :data:`~ddxr.vocabulary.SIZES` looked up for one size label or an array of them."""
    return SIZES[column].astype(np.float64).reindex(np.atleast_1d(params)).to_numpy().reshape(np.shape(params))


def tokens_at(params: np.ndarray | str, step: np.ndarray | int) -> np.ndarray:
    """Tokens seen at a pretraining step: step × batch × 2048."""
    return np.asarray(step, dtype=np.float64) * size_constant(params, "tokens_per_step")


def compute_at(params: np.ndarray | str, tokens: np.ndarray | float) -> np.ndarray:
    """Training FLOPs for a number of tokens: 6 × true parameter count × tokens."""
    return 6.0 * size_constant(params, "true_params") * np.asarray(tokens, dtype=np.float64)


def primary_score(task: str, compute: np.ndarray, data: np.ndarray | str) -> np.ndarray:
    """Noise-free primary score of a task after some training compute on some recipe."""
    chance, ceiling = TASK_RANGE[task]
    quality = np.vectorize(RECIPE_QUALITY.__getitem__, otypes=[float])(data)
    progress = _COMPUTE_SLOPE * (np.log10(np.asarray(compute, dtype=np.float64) + 1e15) - _COMPUTE_MIDPOINT)
    return chance + (ceiling - chance) / (1.0 + np.exp(-(progress + _QUALITY_SHIFT * quality)))


def perplexity(ppl_set: str, compute: np.ndarray, data: np.ndarray | str) -> np.ndarray:
    """Noise-free validation perplexity of a set: falls with compute as a power law, better recipes lower."""
    quality = np.vectorize(RECIPE_QUALITY.__getitem__, otypes=[float])(data)
    scale = 250.0 * (1.0 - 0.1 * quality)
    return PPL_FLOOR[ppl_set] + scale * (np.asarray(compute, dtype=np.float64) / 1e15 + 1.0) ** -0.25
