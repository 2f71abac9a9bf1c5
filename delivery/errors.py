"""The exception tree of the delivery side."""


class DeliveryError(Exception):
    """Base of every error delivery raises on purpose."""
