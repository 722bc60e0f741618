"""Use a trained model: export it, recommend, find similar items, encode new users, serve over HTTP.

``export`` (files and the reader), ``recommend`` (top-K through the evaluator's exact ranking
engine), ``foldin`` (new users from their items), ``app`` (the FastAPI server, extra ``serve``), ``ann``
(faiss indexes, extra ``ann``), ``commands`` (the CLI subcommands).
"""
