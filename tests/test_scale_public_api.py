"""The public names of asyncbulk.postgres and asyncbulk.redis: sorted, complete, documented."""

import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ("asyncbulk.postgres", "asyncbulk.redis")


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return 0, name
    if name[0].isupper():
        return 1, name
    return 2, name


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_and_complete(package: str) -> None:
    """__all__ is sorted and names every public class of the package's private modules."""
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__, key=isort_key)
    defined = set()
    for info in pkgutil.iter_modules(module.__path__):
        private = importlib.import_module(f"{package}.{info.name}")
        defined |= {
            name
            for name, obj in inspect.getmembers(private, inspect.isclass)
            if obj.__module__ == private.__name__ and not name.startswith("_")
        }
    assert defined <= set(module.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_a_docstring(package: str) -> None:
    """Each exported class and function says what it is."""
    module = importlib.import_module(package)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_importing_asyncbulk_needs_neither_driver() -> None:
    """The top-level package does not import asyncpg or redis: the extras stay optional."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = "import sys, asyncbulk; print('asyncpg' in sys.modules, 'redis' in sys.modules)"
    result = subprocess.run(  # noqa: S603 -- our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
