"""xlt: studies of cross-lingual transfer for pretrained encoders."""

__version__ = "0.1.0"
