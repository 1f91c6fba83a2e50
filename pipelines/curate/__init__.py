"""Curate stage: raw web shards -> extracted, language-identified, filtered, exact-deduplicated, scored Parquet."""
