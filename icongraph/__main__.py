"""``python -m icongraph``: the command line (:mod:`icongraph.cli`), also as
``torchrun --nproc-per-node 2 -m icongraph embed data.npy -o out.npy``."""

import sys

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
