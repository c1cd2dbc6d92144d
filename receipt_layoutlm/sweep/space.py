"""The search space of a sweep: which train settings Optuna chooses, and how.

A space file (YAML or JSON) has up to three sections, each keyed by train flag (`lr` or `warmup-ratio`):

    params:                      # searched
      lr: {low: 1.0e-4, high: 5.0e-4, log: true}   # float range (log-uniform with log: true)
      epochs: {low: 3, high: 8}                      # int range (both bounds integers)
      batch_size: [8, 16, 32]                        # a choice
      o_entity_ratio: [off, 1.0, 2.0]                # off / null: the flag is not given
    fixed:                       # every trial gets these (a flag given on the command line wins)
      label_smoothing: 0.1
    variants:                    # named settings, searched as one choice `variant`
      base: {}
      lr-5e-5: {lr: 5.0e-5}
    sampler: grid                # optional: the default --sampler of this space

A flag in neither section is fixed from the command line, as in `train`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import UserError
from ..training.config import TrainConfig, check_config

# Settings that define the data or the run's identity: changing them makes trials incomparable
# (another split, other labels) or is not a recipe choice.
NOT_SEARCHABLE = {
    "job_name", "dataset", "dynamo_table", "label_status", "output_dir", "output_s3_uri", "description",
    "priority", "merge_amounts", "allowed_labels", "val_ratio", "seed", "num_workers", "save_total_limit",
    "max_steps", "precision",
}  # fmt: skip
OPTIONAL = {f.name for f in fields(TrainConfig) if f.default is None}  # settings that may be off
SECTIONS = ("params", "fixed", "variants", "sampler", "description")
SAMPLERS = ("tpe", "random", "grid")

# The seed's Phase 2 recipe, and its Phase 3 "if F1 < 0.5" variants, each changed alone.
PHASE2 = {"batch_size": 64, "lr": 6e-5, "warmup_ratio": 0.2, "label_smoothing": 0.1, "o_entity_ratio": 2.0}
PRESETS = {
    "phase3": {
        "description": "the seed's Phase 2 recipe and its three Phase 3 variants (lr, O:entity, warm-up), as a grid",
        "fixed": PHASE2,
        "variants": {
            "phase2": {},
            "lr-5e-5": {"lr": 5e-5},
            "o-entity-1.8": {"o_entity_ratio": 1.8},
            "warmup-0.1": {"warmup_ratio": 0.1},
        },
        "sampler": "grid",
    },
    # A 6-layer, 22M-parameter model: higher learning rates and small batches (more updates per
    # epoch) suit it; measured on WildReceipt, batch 8 / lr 3e-4 reached val F1 0.83 where the
    # Phase 2 recipe (batch 64, lr 6e-5) reached 0.78.
    "small-model": {
        "description": "MiniLM-sized models (--pretrained minilm): lr 1e-4..5e-4, batches of 4-16",
        "params": {
            "lr": {"low": 1e-4, "high": 5e-4, "log": True},
            "batch_size": [4, 8, 16],
            "warmup_ratio": {"low": 0.0, "high": 0.3},
            "label_smoothing": {"low": 0.0, "high": 0.2},
            "o_entity_ratio": [None, 1.0, 2.0, 4.0],
            "weight_decay": [0.0, 0.01, 0.1],
            "box_level": ["word", "line"],
            "decode": ["argmax", "bio"],
        },
    },
    # LayoutLM-base (113M parameters) is fine-tuned at 1e-5..5e-5 (its paper used 5e-5); higher rates
    # destabilise a 12-layer model, and it learns enough per step to take larger batches.
    "base-model": {
        "description": "layoutlm-base-sized models: lr 1e-5..1e-4, batches of 8-32",
        "params": {
            "lr": {"low": 1e-5, "high": 1e-4, "log": True},
            "batch_size": [8, 16, 32],
            "warmup_ratio": {"low": 0.0, "high": 0.2},
            "label_smoothing": {"low": 0.0, "high": 0.2},
            "o_entity_ratio": [None, 1.0, 2.0],
            "weight_decay": [0.0, 0.01],
            "box_level": ["word", "line"],
            "decode": ["argmax", "bio"],
        },
    },
}


def _field_name(key: str, where: str) -> str:
    name = str(key).replace("-", "_")
    known = {f.name for f in fields(TrainConfig)}
    if name not in known:
        raise UserError(f"Search space {where}: {key!r} is not a train flag; use names such as lr or warmup_ratio.")
    if name in NOT_SEARCHABLE:
        raise UserError(
            f"Search space {where}: {key!r} cannot be searched (it changes the data or names the run); "
            "pass it on the command line instead."
        )
    return name


def _value(name: str, value, where: str):
    """A YAML value as the setting's type: `off`/null for optional settings, numbers YAML read as text."""
    if value in (None, "off", "none", False) and name in OPTIONAL:
        return None
    if isinstance(value, str) and name not in ("example_unit", "box_level", "decode"):
        try:
            return float(value)  # PyYAML reads 1e-5 (no dot) as a string
        except ValueError:
            raise UserError(f"Search space {where}: {name} = {value!r} is not a number.") from None
    return value


@dataclass
class SearchSpace:
    params: dict = field(default_factory=dict)  # name -> list of choices, or {low, high, log, step}
    fixed: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)  # variant name -> settings
    sampler: str | None = None
    description: str = ""

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in SECTIONS if getattr(self, k)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def distributions(self) -> dict:
        """Optuna distributions by parameter name (variants as the categorical `variant`)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for name, spec in self.params.items():
            if isinstance(spec, list):
                out[name] = CategoricalDistribution(spec)
            elif all(isinstance(spec[k], int) for k in ("low", "high")) and not isinstance(spec.get("step"), float):
                out[name] = IntDistribution(
                    spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step", 1)
                )
            else:
                out[name] = FloatDistribution(
                    float(spec["low"]), float(spec["high"]), log=spec.get("log", False), step=spec.get("step")
                )
        if self.variants:
            out["variant"] = CategoricalDistribution(list(self.variants))
        return out

    def grid(self) -> list[dict]:
        """Every combination of the choices, in file order; None when a parameter is a range."""
        import itertools

        names = list(self.params) + (["variant"] if self.variants else [])
        choices = [self.params[n] for n in self.params] + ([list(self.variants)] if self.variants else [])
        if any(not isinstance(c, list) for c in choices):
            return None
        return [dict(zip(names, combo)) for combo in itertools.product(*choices)]

    def settings(self, params: dict) -> dict:
        """The train settings of a trial: the fixed ones, then its variant's, then its parameters."""
        out = dict(self.fixed)
        out.update(self.variants.get(params.get("variant"), {}))
        out.update({k: v for k, v in params.items() if k != "variant"})
        return out

    def searched(self) -> set[str]:
        return set(self.params) | {k for v in self.variants.values() for k in v}

    def check(self, base: dict) -> None:
        """Each choice and bound, applied alone to the command line's settings, passes train's checks.

        base: the command line's settings as given (window_overlap None unless given, so that it follows
        a searched max_seq_length as in `train`)."""
        trials = [dict(self.fixed)] + [self.settings({"variant": v}) for v in self.variants]
        for name, spec in self.params.items():
            values = spec if isinstance(spec, list) else [spec["low"], spec["high"]]
            trials += [{**self.fixed, name: v} for v in values]
        for settings in trials:
            try:
                check_config(TrainConfig(**{**base, **settings, "job_name": "trial"}))
            except UserError as e:
                raise UserError(f"The search space gives a setting train refuses ({settings}): {e}") from None


def parse_space(data: dict, where: str) -> SearchSpace:
    if not isinstance(data, dict) or set(data) - set(SECTIONS):
        extra = sorted(set(data) - set(SECTIONS)) if isinstance(data, dict) else type(data).__name__
        raise UserError(f"Search space {where}: unexpected {extra}; a space has sections {', '.join(SECTIONS)}.")
    space = SearchSpace(description=str(data.get("description", "")))
    for key, spec in (data.get("params") or {}).items():
        name = _field_name(key, where)
        if isinstance(spec, list):
            if not spec:
                raise UserError(f"Search space {where}: {key} has no choices.")
            space.params[name] = [_value(name, v, where) for v in spec]
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "step"}:
            low, high = (_value(name, spec[k], where) for k in ("low", "high"))
            if not isinstance(low, (int, float)) or not low < high:
                raise UserError(f"Search space {where}: {key} needs numbers low < high, got {spec}.")
            if spec.get("log") and low <= 0:
                raise UserError(f"Search space {where}: {key} is log-uniform, so low must be positive.")
            space.params[name] = {"low": low, "high": high, **{k: spec[k] for k in ("log", "step") if k in spec}}
        else:
            raise UserError(
                f"Search space {where}: {key} must be a list of choices or {{low, high[, log][, step]}}, got {spec!r}."
            )
    space.fixed = {
        _field_name(k, where): _value(_field_name(k, where), v, where) for k, v in (data.get("fixed") or {}).items()
    }
    for variant, settings in (data.get("variants") or {}).items():
        if not isinstance(settings, dict):
            raise UserError(f"Search space {where}: variant {variant!r} must map flags to values.")
        space.variants[str(variant)] = {
            _field_name(k, where): _value(_field_name(k, where), v, where) for k, v in settings.items()
        }
    overlap = set(space.params) & set(space.fixed)
    if overlap:
        raise UserError(f"Search space {where}: {sorted(overlap)} are both searched and fixed; keep one.")
    if data.get("sampler") is not None and data["sampler"] not in SAMPLERS:
        raise UserError(f"Search space {where}: sampler must be one of {', '.join(SAMPLERS)}.")
    space.sampler = data.get("sampler")
    if not space.params and not space.variants:
        raise UserError(f"Search space {where} searches nothing; add params or variants.")
    return space


def load_space(path: str | None, preset: str | None) -> SearchSpace:
    """The space of --space FILE (YAML or JSON) or --preset NAME (exactly one)."""
    if bool(path) == bool(preset):
        raise UserError(f"Pass exactly one of --space FILE or --preset ({', '.join(PRESETS)}).")
    if preset:
        return parse_space(PRESETS[preset], f"preset {preset}")
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(
            f"Cannot read the search space {file} ({e.strerror}); pass an existing YAML or JSON file."
        ) from None
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)  # JSON is YAML too
    except Exception as e:  # noqa: BLE001 - yaml and json raise their own errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"The search space {file} is not valid YAML/JSON ({first}); fix the file.") from None
    return parse_space(data, str(file))
