"""Firmware sources behind one Protocol: OCI registry, OCI layout dir, file dir (hawkBit next)."""
