"""The sweep's figures (matplotlib, Agg): the load points (``load_figures``), the reference
measurements and ADR-002's claims (``reference_figures``), and what they share (``style``)."""
