"""Embeddings: the two-tower model, its training, and the FAISS item index built from it."""
