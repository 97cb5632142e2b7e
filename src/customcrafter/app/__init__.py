"""``customcrafter app``: a local web page that runs the whole method (the ``app`` extra)."""
