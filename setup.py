"""Ships the top-level model card template (model_card.md) inside the package as prodcat/model_card.md.

All other metadata is in pyproject.toml; this hook only exists because package data must live
inside the package folder, while the template is kept at the top level where people look for it.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithModelCardTemplate(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file("model_card.md", os.path.join(self.build_lib, "prodcat", "model_card.md"))


setup(cmdclass={"build_py": BuildPyWithModelCardTemplate})
