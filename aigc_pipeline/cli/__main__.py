"""`python -m aigc_pipeline.cli`: the `aigc` command."""

from . import main

main()
