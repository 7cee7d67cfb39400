"""`python -m archive` is `archivectl`."""
from .cli.main import main

main()
