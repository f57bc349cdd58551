"""Similarity metrics and penalties: ``protocol`` (the one metric protocol and the intensity chain
rule), ``intensity``, ``penalties``, ``impact`` and ``distances`` (feature distances)."""
