"""hydradet: one detector, a head per label space."""
