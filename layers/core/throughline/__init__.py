"""Throughline: end-to-end marketing analytics for Bitrix24 on AWS Lambda (the shared core layer)."""

__version__ = "0.1.0"
