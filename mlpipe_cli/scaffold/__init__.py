"""`mlpipe init`'s project templates, one directory per example (``churn/``).

Files are stored as the project gets them, except that dotfiles drop their dot (``gitignore``)
so no packaging tool skips them. ``mlpipe_cli.ops.init`` writes them; the churn
``mlpipe.yaml`` is ``configs/example.yaml`` with project-relative paths (a test keeps the two
in step).
"""

from __future__ import annotations

from importlib import resources

EXAMPLES = ("churn",)

# template file in the package -> path in the project
TEMPLATES = {
    "mlpipe.yaml": "mlpipe.yaml",
    "Makefile": "Makefile",
    "train_model.py": "train_model.py",
    "gitignore": ".gitignore",
}


def template_text(example: str, name: str) -> str:
    """The text of one packaged template (``name`` as stored, e.g. ``gitignore``)."""
    return resources.files(__name__).joinpath(example, name).read_text(encoding="utf-8")
