"""`python -m convert`: the same commands as `genderscore convert`."""

from convert.cli import cli
from models.cli_support import main_for

main_for(cli, "python -m convert")()
