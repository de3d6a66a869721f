"""One module per CLI verb; each exposes ``run(args) -> int`` and raises UserError for bad input."""
