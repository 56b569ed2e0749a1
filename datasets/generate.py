"""Write the generated manifold dataset to an .npz (X, y): see README.md in this folder."""

import argparse

import numpy as np

from icongraph.datasets import make_manifolds

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default="manifolds.npz")
    args = parser.parse_args()
    X, y = make_manifolds(args.n_samples, seed=args.seed)
    np.savez(args.output, X=X, y=y)
    print(f"{X.shape[0]} x {X.shape[1]} -> {args.output}")
