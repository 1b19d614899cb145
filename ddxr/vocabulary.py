"""The DataDecide vocabulary: sizes, recipes, seeds, tasks and metrics.

Every module takes its names and constants from here (docs/dataset.md §1, docs/sources.md §2-§3), so one table is the
single source of truth for spellings and per-size constants.
"""

from __future__ import annotations

import pandas as pd

#: Tokens per sequence of every DataDecide model.
SEQUENCE_LENGTH = 2048

# label, batch size (sequences), true non-embedding parameter count N, real final step (`main`), W&B model_size
_SIZE_ROWS = [
    ("4M", 32, 3_744_832, 5_725, 3.7e6),
    ("6M", 32, 6_010_464, 9_182, 6.0e6),
    ("8M", 32, 8_538_240, 13_039, 8.5e6),
    ("10M", 32, 9_900_432, 15_117, 9.9e6),
    ("14M", 32, 14_380_224, 21_953, 14.4e6),
    ("16M", 32, 16_004_560, 24_432, 16.0e6),
    ("20M", 64, 19_101_888, 14_584, 19.1e6),
    ("60M", 96, 57_078_144, 29_042, 57.1e6),
    ("90M", 160, 97_946_640, 29_901, 97.9e6),
    ("150M", 192, 151_898_880, 38_157, 151.9e6),
    ("300M", 320, 319_980_544, 45_787, 320.0e6),
    ("530M", 448, 530_074_944, 57_786, 530.1e6),
    ("750M", 576, 681_297_408, 63_589, 681.3e6),
    ("1B", 704, 1_176_832_000, 69_369, 1176.8e6),
]

#: Per-size constants indexed by the size label, in numeric order (docs/sources.md §3.3).
SIZES = pd.DataFrame(
    _SIZE_ROWS, columns=["params", "batch_size", "true_params", "final_step", "wandb_model_size"]
).set_index("params")
SIZES["tokens_per_step"] = SIZES["batch_size"] * SEQUENCE_LENGTH
SIZES["params_numeric"] = [float(label[:-1]) * (1e9 if label.endswith("B") else 1e6) for label in SIZES.index]

#: Size labels in numeric order.
PARAMS = tuple(SIZES.index)

# display name, HF slug, internal ladder id, run-name codes besides the slug (docs/sources.md §6.2)
_RECIPE_ROWS = [
    ("Dolma1.7", "dolma1_7", "dolma17", ("d17",)),
    ("Dolma1.7 (no code)", "dolma1_7-no-code", "no_code", ()),
    ("Dolma1.7 (no math, code)", "dolma1_7-no-math-code", "no_math_no_code", ()),
    ("Dolma1.7 (no Reddit)", "dolma1_7-no-reddit", "no_reddit", ()),
    ("Dolma1.7 (no Flan)", "dolma1_7-no-flan", "no_flan", ()),
    ("Dolma1.6++", "dolma1_6plus", "dolma-v1-6-and-sources-baseline", ("d16",)),
    ("C4", "c4", "c4", ("c4",)),
    ("FineWeb-Pro", "fineweb-pro", "prox_fineweb_pro", ("fineweb_pro",)),
    ("FineWeb-Edu", "fineweb-edu", "fineweb_edu_dedup", ("fineweb_edu",)),
    ("Falcon", "falcon", "falcon", ("falcon",)),
    ("Falcon+CC", "falcon-and-cc", "falcon_and_cc", ("falcon_cc",)),
    ("Falcon+CC (QC 10%)", "falcon-and-cc-qc-10p", "falcon_and_cc_eli5_oh_top10p", ("falcon_cc_qc10p",)),
    ("Falcon+CC (QC 20%)", "falcon-and-cc-qc-20p", "falcon_and_cc_eli5_oh_top20p", ("falcon_cc_qc20p",)),
    (
        "Falcon+CC (QC Orig 10%)",
        "falcon-and-cc-qc-orig-10p",
        "falcon_and_cc_og_eli5_oh_top10p",
        ("falcon_cc_qcorig10p",),
    ),
    (
        "Falcon+CC (QC Tulu 10%)",
        "falcon-and-cc-qc-tulu-10p",
        "falcon_and_cc_tulu_qc_top10",
        ("falcon_cc_qctulu10p",),
    ),
    ("DCLM-Baseline", "dclm-baseline", "DCLM-baseline", ("dclm",)),
    (
        "DCLM-Baseline 25% / Dolma 75%",
        "dclm-baseline-25p-dolma1.7-75p",
        "dolma17-75p-DCLM-baseline-25p",
        ("dclm25_dolma75", "dclm_25_d17_75"),
    ),
    (
        "DCLM-Baseline 50% / Dolma 50%",
        "dclm-baseline-50p-dolma1.7-50p",
        "dolma17-50p-DCLM-baseline-50p",
        ("dclm50_dolma50", "dclm_50_d17_50"),
    ),
    (
        "DCLM-Baseline 75% / Dolma 25%",
        "dclm-baseline-75p-dolma1.7-25p",
        "dolma17-25p-DCLM-baseline-75p",
        ("dclm75_dolma25", "dclm_75_d17_25"),
    ),
    (
        "DCLM-Baseline (QC 7%, FW2)",
        "dclm-baseline-qc-7p-fw2",
        "dclm_ft7percentile_fw2",
        ("dclm_qc7p_fw2", "dclm_qc7fw2"),
    ),
    (
        "DCLM-Baseline (QC 7%, FW3)",
        "dclm-baseline-qc-7p-fw3",
        "dclm_ft7percentile_fw3",
        ("dclm_qc7p_fw3", "dclm_qc7fw3"),
    ),
    ("DCLM-Baseline (QC FW 10%)", "dclm-baseline-qc-fw-10p", "dclm_fw_top10", ("dclm_qcfw10p",)),
    ("DCLM-Baseline (QC FW 3%)", "dclm-baseline-qc-fw-3p", "dclm_fw_top3", ("dclm_qcfw3p",)),
    (
        "DCLM-Baseline (QC 10%)",
        "dclm-baseline-qc-10p",
        "pos_eli5_oh_neg_dclm_refinedweb_steps_2000_lr3e4_top10p",
        ("dclm_qc10p",),
    ),
    (
        "DCLM-Baseline (QC 20%)",
        "dclm-baseline-qc-20p",
        "pos_eli5_oh_neg_dclm_refinedweb_steps_2000_lr3e4_top20p",
        ("dclm_qc20p",),
    ),
]

#: Recipes indexed by display name, with HF slug and internal ladder id.
RECIPES = pd.DataFrame([row[:3] for row in _RECIPE_ROWS], columns=["data", "slug", "internal_id"]).set_index("data")

#: Recipe display names in the canonical order.
DATA = tuple(RECIPES.index)

#: Every spelling a run name or model path may use for a recipe (slug, internal id, codes) → display name.
RECIPE_CODES: dict[str, str] = {}
for _name, _slug, _internal, _codes in _RECIPE_ROWS:
    for _code in (_slug, _internal, *_codes):
        RECIPE_CODES[_code] = _name

#: Raw DataDecide seed names → ddxr seed (docs/sources.md §2.4).
SEED_NAMES = {"default": 0, "small aux 2": 1, "small aux 3": 2, "large aux 2": 3, "large aux 3": 4}
#: DataDecide internal training seeds, indexed by ddxr seed.
INTERNAL_SEEDS = {0: 6198, 1: 14, 2: 15, 3: 4, 4: 5}

#: The nine OLMES multiple-choice tasks and their primary metric (docs/sources.md §2.6).
OLMES_TASKS = {
    "arc_challenge": "acc_uncond",
    "arc_easy": "acc_per_char",
    "boolq": "acc_raw",
    "csqa": "acc_uncond",
    "hellaswag": "acc_per_char",
    "openbookqa": "acc_uncond",
    "piqa": "acc_per_char",
    "socialiqa": "acc_per_char",
    "winogrande": "acc_raw",
}

#: The 57 MMLU subjects as DataDecide task names.
MMLU_TASKS = tuple(
    "mmlu_" + subject
    for subject in (
        "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
        "college_computer_science college_mathematics college_medicine college_physics computer_security "
        "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
        "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
        "high_school_geography high_school_government_and_politics high_school_macroeconomics "
        "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
        "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
        "international_law jurisprudence logical_fallacies machine_learning management marketing "
        "medical_genetics miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory "
        "professional_accounting professional_law professional_medicine professional_psychology "
        "public_relations security_studies sociology us_foreign_policy virology world_religions"
    ).split()
)

#: The 66 tasks of the raw DataDecide eval table (``mmlu_average`` is derived, not a row).
RAW_TASKS = tuple(sorted((*OLMES_TASKS, *MMLU_TASKS)))

#: Primary metric of every task, ``mmlu_average`` included.
PRIMARY_METRIC = {**OLMES_TASKS, **dict.fromkeys((*MMLU_TASKS, "mmlu_average"), "acc_raw")}

#: The 28 DataDecide metrics, in full_eval order (``primary_metric`` last).
METRICS = tuple(
    (
        "correct_choice acc_raw acc_per_token acc_per_char acc_per_byte acc_uncond no_answer sum_logits_corr "
        "logits_per_token_corr logits_per_char_corr bits_per_byte_corr correct_prob correct_prob_per_token "
        "correct_prob_per_char margin margin_per_token margin_per_char total_prob total_prob_per_token "
        "total_prob_per_char uncond_correct_prob uncond_correct_prob_per_token uncond_correct_prob_per_char "
        "uncond_total_prob norm_correct_prob norm_correct_prob_per_token norm_correct_prob_per_char primary_metric"
    ).split()
)

#: Metrics that ``boolq`` and ``winogrande`` do not have.
UNCOND_METRICS = (
    "acc_uncond",
    "uncond_correct_prob",
    "uncond_correct_prob_per_token",
    "uncond_correct_prob_per_char",
    "uncond_total_prob",
)
TASKS_WITHOUT_UNCOND = ("boolq", "winogrande")

#: Metrics a task-metric column name may end with, longest first so that splitting is unambiguous.
METRIC_SUFFIXES = tuple(sorted(METRICS, key=len, reverse=True))

#: The 11 perplexity sets, as the raw table spells them.
PPL_SETS = (
    "wikitext_103",
    "pile",
    "m2d2_s2orc",
    "ice",
    "dolma_wiki",
    "dolma_stack",
    "dolma_reddit",
    "dolma_pes2o",
    "dolma_common-crawl",
    "dolma_books",
    "c4_en",
)


def ppl_variable(ppl_set: str) -> str:
    """Return the ddxr variable name of a perplexity set (``dolma_common-crawl`` → ``dolma_common_crawl_valppl``)."""
    return ppl_set.replace("-", "_") + "_valppl"


def metric_variable(task: str, metric: str) -> str:
    """Return the ddxr variable name of a task metric: the task name for its primary score, else ``<task>_<metric>``."""
    if metric in ("primary_metric", "primary_score"):
        return task
    return f"{task}_{metric}"


#: Name of the mean primary score of the nine OLMES tasks, in both phases.
OLMES_9_AVERAGE = "olmes_9_average"

#: Learning-rate sentinel of pretraining-only lineages (an index level must never hold NaN).
PRETRAINING_LEARNING_RATE = 0.0
#: Learning-rate sentinel of post-training lineages whose hyperparameter no source records (counted in the report).
UNKNOWN_LEARNING_RATE = -1.0

#: Tokens per preference pair assumed when estimating DPO tokens, which DPO runs do not log (docs/sources.md §7
#: rule a): the launcher planned ≈210M tokens per epoch of the 269,478-pair Tulu-3 preference mix. DPO tokens at a
#: point = training_step × per_device_train_batch_size × gradient_accumulation_steps × gpu_count × this.
DPO_TOKENS_PER_PAIR = 779
