"""`python -m ensemble`: the same commands as `genderscore ensemble`."""

from ensemble.cli import cli
from models.cli_support import main_for

main_for(cli, "python -m ensemble")()
