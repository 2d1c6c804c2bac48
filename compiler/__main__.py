"""Allow ``python -m ai4ec``."""

from .cli import main

main()
