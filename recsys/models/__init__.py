"""Artifacts that builders write and the server reads, in modules that need no training code: the Wide & Deep
ranker's network and encoder, the FAISS item index, the item-to-item neighbours and candidate generation over
them. The Bento packs these with the rest of the core, and no builder package."""
