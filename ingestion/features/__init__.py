"""Offline feature engineering: point-in-time user and item snapshots and item co-occurrence, built with Spark
from the lake and written as Parquet tables that the Feast file sources read (``engineering``), and their
materialization into the online store (``materialize``)."""
