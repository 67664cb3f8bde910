"""Keep pytest's rootdir and ini file where they belong when a --soap-* path is written with a space.

pytest picks the rootdir and the ini file before it loads plugins, so it takes the value of
`--soap-baseline /abs/b.json` for a test path when that file exists. The rootdir then moves to a common
ancestor, the ini file (testpaths, pythonpath, addopts) is lost and every node id changes, so a baseline
matches nothing. Once our options are known, the setup is worked out again with the arguments pytest now
sees as paths; when it differs, the settings that came from the ini file are applied as pytest would have.
pytest has no public way to do this, so a version without the attributes relied on gets a one-line error.
"""

from __future__ import annotations

import copy
import inspect
import sys

import pytest
from _pytest.config.findpaths import determine_setup

from .config import OPTIONS

VALUED_FLAGS = {opt.flag for opt in OPTIONS if opt.kind is not bool}


def settle(config: pytest.Config, args: list[str]) -> None:
    """Redo pytest's rootdir and ini-file choice with our options' values no longer taken for test paths."""
    if not any(arg in VALUED_FLAGS for arg in args[:-1]):
        return  # no --soap-* value stood alone, for pytest to take it for a path
    ns = config.known_args_namespace  # parsed again once the plugins' options were known
    wanted = dict(inifile=ns.inifilename, override_ini=ns.override_ini, args=ns.file_or_dir,
                  rootdir_cmd_arg=ns.rootdir or None, invocation_dir=config.invocation_params.dir)
    accepted = inspect.signature(determine_setup).parameters
    rootpath, inipath, inicfg, *_ = determine_setup(**{k: v for k, v in wanted.items() if k in accepted})
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    cfg_attr = "_inicfg" if hasattr(config, "_inicfg") else "inicfg"
    if not all(hasattr(config, a) for a in ("_rootpath", "_inipath", "_inicache", cfg_attr)):
        raise pytest.UsageError(_unsupported(config, rootpath))
    if config.inipath is not None and config.getini("addopts"):
        # The wrong ini file's addopts are in the arguments already and cannot be taken back.
        raise pytest.UsageError(_unsupported(config, rootpath))
    old_cut = str(config.inipath.parent if config.inipath else config.rootpath)  # pytest's default --confcutdir
    config._rootpath, config._inipath = rootpath, inipath
    setattr(config, cfg_attr, inicfg)
    config._inicache.clear()
    config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))

    addopts = list(config.getini("addopts"))
    if addopts:
        args[:] = addopts + args
        config.pluginmanager.consider_preparse(addopts, exclude_only=False)  # the -p plugins among them
        ns = config.known_args_namespace = config._parser.parse_known_args(args, namespace=copy.copy(config.option))
    if ns.confcutdir in (None, old_cut):
        ns.confcutdir = str(inipath.parent if inipath else rootpath)
    for path in reversed(config.getini("pythonpath")):
        sys.path.insert(0, str(path))  # pytest's own clean-up takes the ini's paths out again at the end
    hook = getattr(getattr(config, "_assertstate", None), "hook", None)
    if hook is not None:
        hook.fnpats = config.getini("python_files")  # read from the wrong ini file when the hook was installed
    getattr(config, "_checkversion", lambda: None)()  # minversion, from the right ini file


def _unsupported(config: pytest.Config, rootpath) -> str:
    return (f"pytest-soap: pytest took a --soap-* path for a test path and chose the rootdir {config.rootpath} "
            f"instead of {rootpath}; write the option with '=', e.g. --soap-baseline=PATH")
