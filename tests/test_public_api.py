import importlib
import inspect

import asyncbulk
import asyncbulk._exceptions


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions and dunders."""
    if name.isupper():
        return 0, name
    if name[0].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_and_unique() -> None:
    """asyncbulk.__all__ is sorted and names each thing once."""
    assert asyncbulk.__all__ == sorted(asyncbulk.__all__, key=isort_key)
    assert len(set(asyncbulk.__all__)) == len(asyncbulk.__all__)


def test_every_exported_name_exists() -> None:
    """Every name in __all__ can be imported from asyncbulk."""
    for name in asyncbulk.__all__:
        assert hasattr(asyncbulk, name), name


def test_the_whole_error_tree_is_exported() -> None:
    """Every exception class asyncbulk defines is exported at the top level."""
    errors = {
        name
        for name, obj in inspect.getmembers(asyncbulk._exceptions, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == "asyncbulk._exceptions"
    }
    assert errors <= set(asyncbulk.__all__)
    assert all(issubclass(getattr(asyncbulk, n), asyncbulk.AsyncBulkError) for n in errors)


def test_vendor_packages_are_re_exported() -> None:
    """The public names of each vendor subpackage are exported at the top level too."""
    for package in ("asyncbulk.chakra", "asyncbulk.zefort"):
        module = importlib.import_module(package)
        assert module.__all__, package
        assert module.__all__ == sorted(module.__all__, key=isort_key)
        assert set(module.__all__) <= set(asyncbulk.__all__), package


def test_errors_are_also_builtin_kinds() -> None:
    """ValidationError is a ValueError and JobTimeoutError a TimeoutError, for plain handlers."""
    assert issubclass(asyncbulk.ValidationError, ValueError)
    assert issubclass(asyncbulk.JobTimeoutError, TimeoutError)
    assert issubclass(asyncbulk.ClientClosedError, RuntimeError)
