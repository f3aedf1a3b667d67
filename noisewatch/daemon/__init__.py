"""The long-running listening service: sources -> ring buffer -> windows -> model -> detector -> sinks."""
