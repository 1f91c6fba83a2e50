"""Global near-duplicate removal with datatrove's MinHash stages, run through the Dask executor."""
