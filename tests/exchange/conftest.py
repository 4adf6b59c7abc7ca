"""Fixtures of tests/exchange beyond tests/conftest.py: AWS KMS on moto's server, and jose (npm)."""

from tests.kms import jose, kms, moto_kms  # noqa: F401 - fixtures
