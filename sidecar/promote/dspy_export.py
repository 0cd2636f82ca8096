"""A version as DSPy's saved-program JSON, for apps that `module.load(path)` a compiled program.

The shape is what `dspy.Module.save("program.json")` writes (dspy 3.4): one entry per
predictor, keyed by its name in `named_predictors()` (`respond`, `cot.predict`,
`react.react`), plus `metadata`. Each component becomes the predictor of the same name, its text
that predictor's `signature.instructions`.

What loading it does, read from dspy's `Predict.load_state` and `Signature.load_state`:
- the signature's saved `fields` are zipped over the app's own fields, so an empty list keeps
  the app's field prefixes and descriptions (a prompt version has none to give);
- `demos`, `traces` and `train` are replaced by the empty lists here, as a freshly saved
  program's are: a version carries instructions, not few-shot demos;
- every predictor of the loading module must have an entry (dspy raises KeyError otherwise),
  so the prompt's components must name all of them; extra components are ignored.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sidecar.errors import InputError
from sidecar.events import PromptDocument

METADATA_KEY: Final = "metadata"
DSPY_FORMAT_VERSION: Final = "3.4.1"
"""The dspy release whose saved-program format this follows (and the tests load with). dspy
compares it with the installed one and logs a warning when they differ."""


def predictor_state(instructions: str) -> dict[str, Any]:
    """One predictor's saved state with only its instructions set."""
    return {
        "traces": [],
        "train": [],
        "demos": [],
        "signature": {"instructions": instructions, "fields": []},
        "lm": None,
    }


def dspy_program(document: PromptDocument) -> dict[str, Any]:
    """The saved-program state of `document`: a predictor per component, and metadata saying
    which dspy format it is and which prompt version it came from."""
    if METADATA_KEY in document.components:
        raise InputError(
            f"{document.name} v{document.version} has a component named {METADATA_KEY!r}, "
            "which DSPy's saved-program JSON keeps for itself"
        )
    program: dict[str, Any] = {
        name: predictor_state(text) for name, text in document.components.items()
    }
    program[METADATA_KEY] = {
        "dependency_versions": {"dspy": DSPY_FORMAT_VERSION},
        "gepa_sidecar": {
            "name": document.name,
            "version": document.version,
            "sha256": document.sha256,
        },
    }
    return program


def dspy_json(document: PromptDocument) -> str:
    """`dspy_program` as the text of a `.json` file (dspy picks JSON over pickle by suffix)."""
    return json.dumps(dspy_program(document), indent=2, ensure_ascii=False) + "\n"
