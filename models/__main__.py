"""`python -m models`: the same commands as `genderscore models`."""

from models.cli import cli
from models.cli_support import main_for

main_for(cli, "python -m models")()
