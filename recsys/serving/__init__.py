"""The online recommendation pipeline, one module per stage; `bento_services/` only hosts it."""
