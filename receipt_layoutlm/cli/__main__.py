"""`python -m receipt_layoutlm.cli`, e.g. `torchrun --nproc_per_node 2 -m receipt_layoutlm.cli train ...`."""

from . import main

main()
