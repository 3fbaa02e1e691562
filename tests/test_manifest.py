"""The npe2 manifest: one source, found by npe2 through the installed package's entry point."""
from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_manifest_is_a_link_to_the_package_manifest():
    top = ROOT / "napari.yaml"
    assert top.is_symlink(), "napari.yaml must be a symlink, not a second copy"
    assert top.resolve() == (ROOT / "napari_cdma" / "napari.yaml").resolve()
    assert yaml.safe_load(top.read_text()) == yaml.safe_load((ROOT / "napari_cdma" / "napari.yaml").read_text())


def test_installed_package_exposes_the_manifest_to_npe2():
    (ep,) = [e for e in entry_points(group="napari.manifest") if e.name == "napari-cdma"]
    module, _, filename = ep.value.partition(":")
    assert (module, filename) == ("napari_cdma", "napari.yaml")
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-cdma")
    assert manifest.name == "napari-cdma"
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    assert commands["napari-cdma.make_widget"] == "napari_cdma._widget:CdmaWidget"
    from napari_cdma import __version__
    from src_model import __version__ as engine_version

    assert manifest.package_version == __version__ == engine_version


def test_module_help_is_plain_text_without_gui_or_torch():
    code = ("import sys, runpy\n"
            "sys.argv = ['napari_cdma', '--help']\n"
            "try:\n    runpy.run_module('napari_cdma', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'napari', 'qtpy', 'PyQt6') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("usage: python -m napari_cdma") and "--screenshot" in out
    assert "``" not in out and "\x1b[" not in out  # no reST markup, no terminal colour codes
