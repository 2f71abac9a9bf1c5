"""Publishing firmware: OCI registry (ORAS), OCI layout directory, plain directory, hawkBit."""
