"""The ``Examples:`` blocks of the docstrings run as doctests, module by module, and the
public names of the building-block modules each carry one."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import dcl_cluster

MODULES = sorted(m.name for m in pkgutil.walk_packages(dcl_cluster.__path__, "dcl_cluster."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Every public name of these modules (their __all__) must show an ``Examples:`` block.
EXAMPLES_REQUIRED = [
    "dcl_cluster.losses.contrastive",
    "dcl_cluster.losses.clustering",
    "dcl_cluster.losses.modules",
    "dcl_cluster.losses.pseudo_labels",
    "dcl_cluster.losses.scan",
    "dcl_cluster.nn.backbones",
    "dcl_cluster.nn.heads",
    "dcl_cluster.presets",
    "dcl_cluster.data.long_tail",
]


def test_the_package_has_modules_to_test():
    assert "dcl_cluster.losses.contrastive" in MODULES and "dcl_cluster.module" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        test.globs = {**module.__dict__, **test.globs}
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def _public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items() if not n.startswith("_")
                 and (inspect.isclass(obj) or inspect.isfunction(obj))
                 and obj.__module__ == module.__name__]
    return names


@pytest.mark.parametrize("name", EXAMPLES_REQUIRED)
def test_public_names_have_an_examples_block(name):
    module = importlib.import_module(name)
    lacking = [n for n in _public_names(module)
               if (inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))
               and "Examples:" not in (inspect.getdoc(getattr(module, n)) or "")]
    assert not lacking, f"{name}: public names without an Examples: block: {lacking}"
