"""The seed's example, end to end: a learning-rate sweep of 150M on Dolma1.7, continuous over cumulative tokens.

Uses the demo sample of ``examples/_demo.py`` (DataDecide files + a SQLite W&B store under ``cache/examples/``,
generated on first use), builds the Dataset (cached by fingerprint), selects the supervised-finetuning sweep at
1e-5, 3e-5, 1e-4 and 3e-4, and draws ``olmes_9_average`` and ``train_loss`` over cumulative tokens, coloured by
learning rate and styled by phase.

Run: ``python examples/lr_sweep.py`` → ``cache/examples/lr_sweep.png``
"""

from pathlib import Path

import numpy as np
from _demo import OUT, demo_next

from ddxr.plotting import plot_sweep


def main(out: Path = OUT) -> Path:
    """Draw the sweep into ``out/lr_sweep.png`` and return that path."""
    dd = demo_next(out)
    sweep = dd.get_sweep_analysis(
        base_params="150M",
        base_data="Dolma1.7",
        posttraining_method="supervised_ft",
        learning_rates=[1e-5, 3e-5, 1e-4, 3e-4],
    )
    sweep_run_ids = np.unique(sweep["lineage"].to_numpy())
    plot_data = dd.get_continuous_curves(sweep_run_ids, metrics=["olmes_9_average", "train_loss"])
    measured = plot_data[~plot_data["anchor"]]  # anchors repeat the base checkpoint at the start of each run
    print(measured.groupby(["learning_rate_label", "phase"], observed=True).size().rename("points").to_string())
    long = sweep.ddxr.to_frame(metrics=["olmes_9_average", "train_loss"], melt=True)
    path = plot_sweep(long, Path(out) / "lr_sweep.png")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
