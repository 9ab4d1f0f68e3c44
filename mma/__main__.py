"""``python -m mma``: the command line (also what ``torchrun -m mma ...`` runs on every rank)."""

from mma.app.cli import main

main()
