"""The synthetic generator's separability benchmark quoted in data/README.md (about two minutes).

    python bench/separability.py --seeds 1 2

Renders the default SynthConfig of each seed in memory and prints grouped (3 of 12 hives held out) MLP,
logistic-regression and one-band-rule accuracies, and the MLP on a random split for comparison
(:mod:`beeaudio.desktop.separability`).
"""

from __future__ import annotations

import argparse

from beeaudio.desktop.separability import separability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--splits", type=int, default=5)
    args = parser.parse_args()
    for seed in args.seeds:
        r = separability(seed=seed, splits=args.splits)
        pct = {k: f"{100 * v:.1f}" for k, v in r.items()}
        print(
            f"seed {seed}: {int(r['windows'])} windows | grouped ({args.splits} splits, 3 hives held out):"
            f" MLP {pct['grouped_mlp_mean']} % (min {pct['grouped_mlp_min']}),"
            f" logistic regression {pct['grouped_logreg_mean']} % (min {pct['grouped_logreg_min']}),"
            f" one-band rule {pct['grouped_one_band_mean']} % (min {pct['grouped_one_band_min']};"
            f" {pct['grouped_one_band_train_mean']} % on its training hives) |"
            f" random split: MLP {pct['random_mlp']} %, one-band {pct['random_one_band']} %"
            f" | render+features {r['render_and_features_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
