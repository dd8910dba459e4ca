"""Scale config files (``config/<scale>.yaml``): load one, validate it against the schema, and check that every
change it makes to the paper's settings is declared as a deviation.

Pure Python, no Snakemake. The Snakefile and the tests import it.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from retinanet.config import ConfigError, RunConfig, merge, to_dict
from retinanet.config_parsing import read_yaml_mapping
from retinanet.rundir.identity import OPERATIONAL_FIELDS


class StudyError(ConfigError):
    """The study configuration is inconsistent (one-line message naming the key)."""


def undeclared_overrides(scale: dict) -> list[str]:
    """Fields the scale's ``base`` changes from the paper without a ``deviations`` entry (operational fields
    excepted), and ``model.pretrained`` unless its weights are the paper's (``weights.source: msra``, Detectron's
    MSRA ResNets). A scale with an empty list is honest about what it changes."""
    declared = {d["field"] for d in scale.get("deviations", [])}
    paper = to_dict(RunConfig())
    out = []

    def walk(over: dict, ref: dict, prefix: str) -> None:
        for key, value in over.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and isinstance(ref.get(key), dict):
                walk(value, ref[key], path + ".")
            elif path not in OPERATIONAL_FIELDS and value != ref.get(key) and path not in declared:
                out.append(path)

    walk(scale.get("base") or {}, paper, "")
    maps = scale["maps"]
    identity = {
        "model.depth": all(e["paper"] == e["ours"] for e in maps["depth"]),
        "data.min_size": all(e["paper"] == e["min_size"] for e in maps["image_scale"]),
        "loss.ohem_batch": all(e["paper"] == e["ours"] for e in maps["ohem_batch"]),
        "model.pretrained": scale["weights"]["source"] == "msra",
    }
    out += [f for f, same in identity.items() if not same and f not in declared]
    return out


def load_scale(config: dict, config_dir: str | Path) -> dict:
    """The full scale config: ``config_dir/<config['scale']>.yaml`` with ``config``'s keys merged over it.

    This is how both ``--configfile config/paper.yaml`` (a complete file) and ``--config scale=paper`` (one key)
    select a scale; any other key given on the command line or in a user config file overrides the scale's value.
    A scale file that is not UTF-8, not YAML, empty or not a mapping raises StudyError naming it.
    """
    name = config.get("scale")
    if not name:
        raise StudyError("config: 'scale' is missing (one of the files in config/: paper, mini, smoke)")
    path = Path(config_dir) / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in Path(config_dir).glob("*.yaml") if p.stem != "config" and _is_scale(p))
        raise StudyError(f"config: scale {name!r} has no file {path} (have: {', '.join(have)})")
    base = read_yaml_mapping(path, "scale config", StudyError)
    return merge(base, config)


def _is_scale(path: Path) -> bool:
    """Whether ``path`` defines a scale (its ``scale:`` is its own name), for the list of known scales; an overlay
    such as config/rehearsal.yaml, passed with ``--configfile`` on top of a scale, is not one."""
    return re.search(rf"^scale:\s*{re.escape(path.stem)}\s*(#.*)?$", path.read_text(errors="replace"), re.M) is not None


def check_config(config: dict, schema_path: str | Path) -> None:
    """Validate the merged scale config against the JSON schema; raise StudyError with one line naming the key."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    message = error.message
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        message += f" (allowed: {', '.join(allowed)})"
    raise StudyError(f"config {config.get('scale', '?')}: {where or '<root>'}: {message}")
