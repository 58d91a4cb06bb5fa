"""The DRAEM paper's numbers (Tables 1 and 2, :mod:`.tables`) and ``draem-zoo reproduce``
(:mod:`.reproduce`): the paper's configuration per category, beside the paper's tables."""
