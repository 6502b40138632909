"""Maps the repository's top-level folders onto subpackages of the one import root, ``balsam``.

A mapping given only in pyproject.toml can leave nested subpackages out of a regular (non-editable)
install while an editable one still shows them, so every package of every folder is listed here
explicitly; tests/test_packaging.py builds the wheel and checks that nothing was dropped.
"""

from setuptools import find_packages, setup

# folder at the repository root -> import name
FOLDERS = {
    "common": "balsam",
    "protos": "balsam.protos",
    "site": "balsam.site",
    "launcher": "balsam.launcher",
    "transfer": "balsam.transfer",
    "argo": "balsam.argo",
}

packages = []
package_dir = {}
for folder, name in FOLDERS.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "balsam.site.db": ["migrations/script.py.mako"],
        "balsam.argo.db": ["migrations/script.py.mako"],
        "balsam.protos": ["*.proto", "*.pyi"],
        "balsam.argo.web": ["templates/*.html", "static/*"],
        "balsam.web": ["templates/*.html", "static/*"],
        "balsam.site.web": ["templates/*.html", "static/*"],
    },
)
