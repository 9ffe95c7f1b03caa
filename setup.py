"""The one build step pyproject.toml cannot express: ship cfg/*.yml inside the wheel as pixelface/configs/.

cfg/ stays the single source (the README, the tests and `--cfg cfg/X.yml` name it); an installed package
finds the copies through pixelface.core.config.find_config. Every other piece of metadata is in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CFG = Path(__file__).resolve().parent / "cfg"


class BuildPyWithConfigs(build_py):
    """build_py, then cfg/*.yml copied into the build's pixelface/configs/."""

    def run(self):
        super().run()
        if self.editable_mode:
            return      # an editable install runs from the checkout, which reads cfg/ itself
        configs = sorted(CFG.glob("*.yml"))
        if not configs:
            raise SystemExit(f"no configs in {CFG}: build from a checkout or an sdist (MANIFEST.in ships cfg/)")
        target = Path(self.build_lib) / "pixelface" / "configs"
        self.mkpath(str(target))
        for config in configs:
            self.copy_file(str(config), str(target / config.name))


setup(cmdclass={"build_py": BuildPyWithConfigs})
