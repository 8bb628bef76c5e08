"""distrec: cross-domain recommendation by domain-adapting pretrained LMs, at cluster scale."""

__version__ = "0.1.0"
