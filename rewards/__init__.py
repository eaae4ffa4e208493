"""Reward adapters: energies R(x, y) over whole sequences (see decoders.protocols.Reward)."""
