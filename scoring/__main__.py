"""`python -m scoring`: the same commands as `genderscore scoring`."""

from models.cli_support import main_for
from scoring.cli import cli

main_for(cli, "python -m scoring")()
