"""The package's public names: sorted, importable, and nothing else leaks as public."""

import types

import sidecar


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert sidecar.__all__ == sorted(sidecar.__all__)
    for name in sidecar.__all__:
        assert getattr(sidecar, name) is not None


def test_public_names_are_exactly_all() -> None:
    public = {
        name
        for name, value in vars(sidecar).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(sidecar.__all__) - {"__version__"}


def test_errors_share_one_root() -> None:
    for error in (sidecar.ConfigError, sidecar.StoreError, sidecar.BrokerError, sidecar.InputError):
        assert issubclass(error, sidecar.SidecarError)
