"""Fixtures for driving a running Tollgate with the official SDKs.

The Rust test `tests/tests/sdk_clients.rs` starts the mock provider and a gateway, then runs
pytest here with TOLLGATE_SDK_BASE_URL and TOLLGATE_SDK_KEY set.
"""

import os

import pytest


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests through `cargo test --test sdk_clients`")
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    return _env("TOLLGATE_SDK_BASE_URL")


@pytest.fixture(scope="session")
def api_key() -> str:
    return _env("TOLLGATE_SDK_KEY")


@pytest.fixture(scope="session")
def openai_client(base_url, api_key):
    from openai import OpenAI

    # The SDK's own retries would hide the gateway's behaviour.
    return OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture(scope="session")
def anthropic_client(base_url, api_key):
    import anthropic

    return anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
