import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_env_lists_are_comma_separated(monkeypatch):
    monkeypatch.setenv("W2V_MODEL", "a=/models/a, b")
    monkeypatch.setenv("W2V_API_KEYS", "k1,k2")
    s = Settings()
    assert s.model == ["a=/models/a", "b"]
    assert s.api_keys == ["k1", "k2"]


def test_invalid_values_fail_fast(monkeypatch):
    monkeypatch.setenv("W2V_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("W2V_PORT")
    with pytest.raises(ValidationError, match="stride_seconds"):
        Settings(chunk_seconds=10, stride_seconds=5)
