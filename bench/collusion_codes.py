"""A design simulation, not a measure of the product: would biased (Tardos) codes name colluders who
restore every value where their copies differ, which today's fair codes miss at ten (README, Tracing)?

It works at the level the tracer scores: one residual R_b per block of 64 carrier weights. A recipient's
copy shifts block b by one ulp on every weight in the direction pattern x symbol, so a verbatim leak gives
R_b = 64 c_b (in ulp^2 units); a leak rounded to 4 bits adds noise of about 120 per block (the figure that
gives today's 4-bit score, 62 on 22,016 blocks); colluders who average give the mean of their symbols; who
restore where their copies differ give 0 wherever their symbols differ and their common symbol elsewhere.

  fair (today, weightgate-trace-v1)  c_b = +-1 with probability 1/2; t = sum c_b R_b / sqrt(sum R_b^2);
                                     named at t >= 8 (Hoeffding: P <= e^-32 for anyone innocent)
  biased (a proposal)                a secret p_b per block, drawn from the arcsine law on [cutoff, 1-cutoff]
                                     and shared by all copies; c_b = +1 with probability p_b; each symbol is
                                     centred and scaled, z_b = (c_b - mu_b) / sqrt(1 - mu_b^2), mu_b = 2 p_b - 1,
                                     t = sum z_b R'_b / sqrt(sum R'_b^2) (the symmetric Tardos score, weighted
                                     by R'_b, the residual less the part the biases predict); the threshold
                                     is the smaller of Hoeffding's and Bernstein's for P <= e^-32, computed
                                     for each leak (it depends on the R'_b and the cutoff)

With fair codes a block survives restoring only when all k colluders drew the same symbol (2^(1-k) of
them); with biased codes p^k + (1-p)^k, which stays large. Usage: python -m bench.collusion_codes
[--blocks 22016] [--innocents 2000] [--trials 5]; writes bench/results/collusion-codes.md.
"""

import argparse
import math

import numpy as np

from bench.verify import publish_results

WEIGHTS_PER_BLOCK = 64
FOUR_BIT_NOISE = 120.0  # per block, in ulp^2 units: 4-bit rounding of weights of std 0.02
BOUND_EXPONENT = 32.0  # P(an innocent reaches the threshold) <= e^-32, as today's t >= 8
SCENARIOS = (
    ("verbatim", "single", 1, 0.0),
    ("4-bit", "single", 1, FOUR_BIT_NOISE),
    ("5 averaging, then 4-bit", "average", 5, FOUR_BIT_NOISE),
    ("10 averaging, then 4-bit", "average", 10, FOUR_BIT_NOISE),
    ("5 restoring where copies differ", "restore", 5, 0.0),
    ("10 restoring where copies differ", "restore", 10, 0.0),
    ("20 restoring where copies differ", "restore", 20, 0.0),
    ("10 restoring, then 4-bit", "restore", 10, FOUR_BIT_NOISE),
)


def biases(rng, blocks: int, code: dict) -> np.ndarray:
    """p_b: 1/2 for fair blocks (every block of a fair code, every other one of a hybrid); the arcsine law
    on [cutoff, 1 - cutoff] elsewhere."""
    p = np.full(blocks, 0.5)
    if code["cutoff"] is not None:
        low = math.asin(math.sqrt(code["cutoff"]))
        biased = np.arange(blocks) % 2 == 1 if code["hybrid"] else np.ones(blocks, dtype=bool)
        p[biased] = np.sin(rng.uniform(low, math.pi / 2 - low, int(biased.sum()))) ** 2
    return p


def parts(p: np.ndarray, code: dict) -> list[np.ndarray]:
    """The sets of blocks each scored on its own: all of them, and for a hybrid its fair and biased halves
    too (a recipient is named when any part names them; the bound is shared out between the parts)."""
    everything = np.ones(len(p), dtype=bool)
    return [everything, p == 0.5, p != 0.5] if code["hybrid"] else [everything]


def leak_residual(rng, colluders: np.ndarray, attack: str, noise: float) -> np.ndarray:
    """R_b of the leak the colluders' copies (rows of +-1 symbols) make."""
    if attack == "single":
        signal = WEIGHTS_PER_BLOCK * colluders[0].astype(np.float64)
    elif attack == "average":
        signal = WEIGHTS_PER_BLOCK * colluders.mean(axis=0)
    else:  # restore: a block keeps its shift only where every colluder's copy holds the same one
        agree = (colluders == colluders[0]).all(axis=0)
        signal = np.where(agree, WEIGHTS_PER_BLOCK * colluders[0], 0.0)
    return signal + rng.normal(0.0, noise, signal.shape) if noise else signal


def centred(residual: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The residual less its part the biases predict (least squares on mu_b): an average of many copies
    leans each block towards mu_b, which says nothing of who made it. Any function of the residual and the
    biases keeps an innocent's score centred (their symbols are drawn apart from both), so the bound holds."""
    mu = 2 * p - 1
    if not mu.any():
        return residual
    return residual - float(residual @ mu) / float(mu @ mu) * mu


def threshold(residual: np.ndarray, p: np.ndarray, exponent: float) -> float:
    """The t at which P(an innocent scores at least t) <= e^-exponent, by the better of two bounds (8 for a
    fair code at e^-32, Hoeffding's)."""
    variance = float((residual**2).sum())
    mu = 2 * p - 1
    ranges = 2 / np.sqrt(1 - mu**2)  # of z_b: (+1 - mu) - (-1 - mu), scaled
    hoeffding = math.sqrt(exponent * float(((residual * ranges) ** 2).sum()) / 2)
    largest = float((np.abs(residual) * np.sqrt((1 + np.abs(mu)) / (1 - np.abs(mu)))).max())
    linear = 2 * exponent * largest / 3  # Bernstein: s^2 = 2E(V + M s / 3), solved for s
    bernstein = (linear + math.sqrt(linear**2 + 8 * exponent * variance)) / 2
    return min(hoeffding, bernstein) / math.sqrt(variance)


def scores(codes: np.ndarray, p: np.ndarray, residual: np.ndarray) -> np.ndarray:
    mu = 2 * p - 1
    z = (codes - mu) / np.sqrt(1 - mu**2)
    return z @ residual / math.sqrt(float((residual**2).sum()))


def run(blocks: int, innocents: int, trials: int, code: dict, seed: int) -> list[dict]:
    """For each scenario: colluders named, the lowest colluder's and the highest innocent's score as a
    multiple of the threshold (the best of their parts')."""
    rng = np.random.default_rng(seed)
    rows = []
    for _label, attack, count, noise in SCENARIOS:
        lowest, named, highest_innocent = math.inf, 0, -math.inf
        for _ in range(trials):
            p = biases(rng, blocks, code)
            codes = np.where(rng.random((count + innocents, blocks)) < p, 1.0, -1.0)
            leak = leak_residual(rng, codes[:count], attack, noise)
            scored = parts(p, code)
            exponent = BOUND_EXPONENT + math.log(len(scored))  # a union bound over the parts
            ratios = np.full(count + innocents, -math.inf)
            for part in scored:
                residual = centred(leak[part], p[part])
                if residual.any():
                    limit = threshold(residual, p[part], exponent)
                    ratios = np.maximum(ratios, scores(codes[:, part], p[part], residual) / limit)
            if np.isinf(ratios).all():
                continue  # nothing of the mark survived
            lowest = min(lowest, float(ratios[:count].min()))
            named += int((ratios[:count] >= 1).sum())
            highest_innocent = max(highest_innocent, float(ratios[count:].max()))
        rows.append({"named": f"{named}/{count * trials}", "lowest": lowest, "innocent": highest_innocent})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.collusion_codes")
    parser.add_argument("--blocks", type=int, default=22016)  # bench.trace's carriers: 1.41 M weights
    parser.add_argument("--innocents", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    codes = {
        "fair (today)": {"cutoff": None, "hybrid": False},
        "biased, cutoff 0.01": {"cutoff": 0.01, "hybrid": False},
        "biased, cutoff 0.003": {"cutoff": 0.003, "hybrid": False},
        "hybrid: half fair, half biased (0.01)": {"cutoff": 0.01, "hybrid": True},
    }
    results = {name: run(args.blocks, args.innocents, args.trials, code, seed=1) for name, code in codes.items()}
    lines = [
        f"# Fair against biased (Tardos) codes: a simulation on {args.blocks:,} blocks of 64 carrier weights",
        "",
        "Synthetic block residuals (see bench/collusion_codes.py), not the product's marking; "
        f"{args.trials} leaks per row, {args.innocents:,} innocent recipients each; every threshold gives an "
        "innocent P <= e^-32. Each cell: colluders named; the lowest colluder's score and the highest "
        "innocent's, as multiples of the threshold (named at 1; 8 for the fair code).",
        "",
        "| leak | " + " | ".join(codes) + " |",
        "| --- | " + " | ".join("---" for _ in codes) + " |",
    ]
    for index, (label, *_rest) in enumerate(SCENARIOS):
        cells = []
        for name in codes:
            row = results[name][index]
            if math.isinf(row["lowest"]):  # nothing of the mark survived: no score to take
                cells.append(f"{row['named']}, no mark left")
            else:
                cells.append(f"{row['named']}, {row['lowest']:.2f}x, {row['innocent']:.2f}x")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    publish_results("collusion-codes.md", lines)


if __name__ == "__main__":
    main()
