"""One module per sampling method; ``decoders.generate`` dispatches on ``GuidanceSpec.method``."""
