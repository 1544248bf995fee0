"""Only what pyproject.toml cannot say: the recipes of the top-level `hub_configs/` folder (their home in the
repository, users copy from it) ship inside the wheel as `ovmlc/hub_configs/`, without a second copy in the
repository. `ovmlc.resources.hub_configs_dir()` finds them in either place."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ovmlc", "ovmlc.*"]), "ovmlc.hub_configs"],
    package_dir={"ovmlc.hub_configs": "hub_configs"},
)
