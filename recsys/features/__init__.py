"""Feature-store access: opening Feast for a profile, the feature services (the contract between features,
training and serving) and the fast online read path."""
