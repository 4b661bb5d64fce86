"""Getting data in: file import (MovieLens, the generic format), the synthetic generator, and the
event consumers (later issues)."""
