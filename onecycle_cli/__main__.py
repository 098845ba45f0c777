"""`python -m onecycle_cli ...`, which is also what torchrun runs:
`torchrun --nproc-per-node 2 -m onecycle_cli train`."""

from .cli import main

main()
