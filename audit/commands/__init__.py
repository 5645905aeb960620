"""One module per CLI command group; :mod:`audit.cli` assembles them."""
