"""params.yaml: loading and validation against one JSON schema.

docs/design.md, principle 2: params.yaml is the only place for science settings, one section
per stage, validated by ``pcrl/schemas/params.schema.yaml``. Every error names the file and
the dotted key at fault (``cubes.pretrain.min_iou``).
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pcrl.errors import ConfigError
from pcrl.outputs import is_within
from pcrl.settings import SETTINGS, Setting

DEFAULT_PARAMS = Path("params.yaml")
#: Folders the pipeline writes (DVC outputs, state, caches), relative to the params file:
#: a user's dataset (``data.local_paths``) may not lie inside them, since DVC and Snakemake
#: delete a stage's outputs before running it.
PIPELINE_FOLDERS = ("data", "results")


#: Aliases (``*name``) a params file may use. A few shorten a config; thousands are an
#: alias bomb, whose nested references the validation would walk for minutes.
MAX_ALIASES = 100


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (YAML keeps the last) and
    more than :data:`MAX_ALIASES` aliases."""

    aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases (line {mark.line + 1}): a params file "
                                  "needs few; this looks like an alias bomb and is not read further")
        return super().compose_node(parent, index)


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode,
                              deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"key {key!r} appears twice in one mapping (lines {seen[key]} "
                              f"and {line}); YAML would silently keep the last")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file, refusing duplicate keys; ConfigError names the file and line."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def check_local_paths(params: dict[str, Any], root: Path, source: str) -> None:
    """Refuse a ``data.local_paths`` folder inside the pipeline's own output folders."""
    for name, given in params.get("data", {}).get("local_paths", {}).items():
        folder = Path(given).expanduser()
        folder = (folder if folder.is_absolute() else root / folder).resolve()
        for owned in PIPELINE_FOLDERS:
            if is_within(folder, (root / owned).resolve()):
                raise ConfigError(
                    f"{source}: data.local_paths.{name}: {given} lies inside the pipeline's "
                    f"own {owned}/ folder, whose contents DVC and Snakemake delete and "
                    "rebuild; keep your dataset outside it"
                )


@functools.cache
def load_schema() -> dict[str, Any]:
    """The params JSON schema shipped with the package."""
    text = resources.files("pcrl").joinpath("schemas/params.schema.yaml").read_text()
    return yaml.safe_load(text)


def _dotted(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(dotted key, message) for one validation error; unknown keys get their own name."""
    key = _dotted(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if extra:
            prefix = f"{key}." if error.absolute_path else ""
            return ", ".join(prefix + e for e in extra), "unknown key (not in the params schema)"
    if error.validator == "required":
        return key, error.message
    return key, f"{error.instance!r} is invalid: {error.message}"


def _check_finite(node: Any, path: tuple[str, ...] = ()) -> None:
    """Reject NaN/inf numbers, which YAML accepts (.nan, .inf) but no setting allows."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_finite(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite(v, (*path, str(i)))
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{_dotted(path)}: {node} is not a finite number")


def validate_params(params: Any, source: str = "params") -> dict[str, Any]:
    """Validate a params mapping; raise ConfigError naming every offending key."""
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    try:
        _check_finite(params)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"{key}: {msg}" for key, msg in map(_describe, errors)]
        raise ConfigError(f"{source}: invalid parameters:\n  " + "\n  ".join(lines))
    _check_semantics(params, source)
    return params


def shard_count(shards: Any, key: str = "data.shards") -> int:
    """The number of shards ``n`` of a valid ``data.shards`` list (``[0, 1, ..., n-1]``)."""
    if (not isinstance(shards, list) or not shards
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in shards)
            or shards != list(range(len(shards)))):
        raise ConfigError(f"{key}: expected the shard numbers [0, 1, ..., n-1], got {shards!r}")
    return len(shards)


def source_of(data: dict[str, Any], dataset: str) -> str:
    """Where ``dataset`` comes from: ``data.sources.<dataset>``, else ``data.source``."""
    return str(data.get("sources", {}).get(dataset, data["source"]))


def _check_semantics(params: dict[str, Any], source: str) -> None:
    """Rules a JSON schema cannot express."""
    data = params["data"]
    missing = [d for d in data["datasets"] if source_of(data, d) == "local" and d not in data.get("local_paths", {})]
    if missing:
        raise ConfigError(
            f"{source}: data.local_paths: source is 'local' but no folder is given for "
            f"{', '.join(missing)}"
        )
    try:
        shard_count(data.get("shards", [0]))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _check_2d(params, source)
    for name, section in params.get("resample", {}).items():
        if "normalization" not in section:  # radiographs: resized, not resampled
            continue
        norm = section["normalization"]
        if norm["kind"] == "window" and not norm.get("min", -1000) < norm.get("max", 1000):
            raise ConfigError(f"{source}: resample.{name}.normalization: min must be below max")
        if norm["kind"] == "percentile" and not norm.get("lower", 0.5) < norm.get("upper", 99.5):
            raise ConfigError(
                f"{source}: resample.{name}.normalization: lower must be below upper"
            )
    for task in ("lcs", "bms"):
        split = params.get("cubes", {}).get(task)
        if split and split["val"] + split["test"] >= 1:
            raise ConfigError(
                f"{source}: cubes.{task}: val + test = {split['val'] + split['test']} "
                "leaves no training cases"
            )
    pretrain = params.get("cubes", {}).get("pretrain")
    if pretrain:
        overlap = set(pretrain["groups"]["train"]) & set(pretrain["groups"]["val"])
        if overlap:
            raise ConfigError(
                f"{source}: cubes.pretrain.groups: {sorted(overlap)} in both train and val"
            )
    finetune = params.get("finetune")
    if finetune and "pretrain" in params:
        for setting in SETTINGS.values():
            _check_method_sections(setting, params, source)
            _check_inits(setting, params, source)
            _check_fractions(setting, params, source)
    ncc = params.get("cubes", {}).get("ncc")
    if ncc:
        seen: dict[str, str] = {}
        for split_name, groups in ncc["groups"].items():
            for g in groups:
                if g in seen:
                    raise ConfigError(
                        f"{source}: cubes.ncc.groups: {g} in both {seen[g]} and {split_name}"
                    )
                seen[g] = split_name


def _check_inits(setting: Setting, params: dict[str, Any], source: str) -> None:
    """The setting's fine-tuning initialisations are scratch, its pretraining methods or
    its external checkpoints."""
    if setting.finetune_keys and not params["finetune"].get(setting.finetune_keys[0]):
        return  # the setting's task is left out
    methods = params.get(setting.pretrain_section, {}).get("methods", [])
    known = {"scratch", *methods, *setting.externals(params["finetune"])}
    unknown = [i for i in setting.inits(params["finetune"]) if i not in known]
    if unknown:
        raise ConfigError(f"{source}: {setting.inits_key}: {unknown} is neither scratch, a {setting.methods_key()} "
                          f"entry nor a {setting.external_key} name (known: {sorted(known)})")


def _check_method_sections(setting: Setting, params: dict[str, Any], source: str) -> None:
    """Every pretraining method listed has its settings section (``pretrain.<method>``),
    which its stage reads."""
    methods = params.get(setting.pretrain_section, {}).get("methods", [])
    missing = [m for m in methods if m not in params["pretrain"]]
    if missing:
        raise ConfigError(f"{source}: {setting.methods_key()}: {missing} listed but pretrain has no section "
                          f"for {'it' if len(missing) == 1 else 'them'} (pretrain.{missing[0]})")


def _check_fractions(setting: Setting, params: dict[str, Any], source: str) -> None:
    """The fine-tuning label fractions are among those each task's cubes stage draws
    (``cubes.<task>.fractions``: the nested label sets fine-tuning reads)."""
    if not setting.inits(params["finetune"]):
        return  # the setting's tasks are left out
    wanted = [float(f) for f in params["finetune"].get("fractions", [])]
    for task in setting.tasks:
        drawn = params.get("cubes", {}).get(task, {}).get("fractions")
        if drawn is None:
            continue
        missing = [f for f in wanted if not any(math.isclose(f, float(d)) for d in drawn)]
        if missing:
            raise ConfigError(f"{source}: finetune.fractions: {missing} not among cubes.{task}.fractions "
                              f"{list(drawn)}, the label sets the {task} fine-tunes read")


def _check_2d(params: dict[str, Any], source: str) -> None:
    """The 2D setting: ResNet-18 sizes divisible by its stride, one width for pretraining
    and Chest14 (the fine-tuning loads the pretrained encoder)."""
    setting = SETTINGS["2d"]
    size = params.get("resample", {}).get("chestxray14", {}).get("size")
    if size and any(int(v) % setting.stride for v in size):
        raise ConfigError(f"{source}: resample.chestxray14.size: {size} must be multiples of {setting.stride} "
                          "(the ResNet-18's stride; Chest14 reads the stored radiographs whole)")
    cube = params.get("cubes", {}).get(setting.pretrain_task, {}).get("cube_size")
    if cube and any(int(v) % setting.stride for v in cube[:2]):
        raise ConfigError(f"{source}: cubes.{setting.pretrain_task}.cube_size: {cube[:2]} must be multiples of "
                          f"{setting.stride} (the ResNet-18's stride)")
    _check_radiograph_sizes(params, source, size)
    methods = params.get(setting.pretrain_section, {}).get("methods", [])
    pretrained = [i for i in setting.inits(params.get("finetune", {})) if i in methods]
    if pretrained and "pretrain" in params:
        network = setting.pretrain_params(params).get("network", {})
        task = params["finetune"][setting.finetune_keys[0]]
        if network.get("base") != task["network"]["base"]:
            raise ConfigError(f"{source}: {setting.finetune_key}.network.base {task['network']['base']} differs "
                              f"from the 2D pretraining's width {network.get('base')} "
                              f"({setting.pretrain_section}.settings.network.base), whose encoder it loads for "
                              f"{pretrained}")


def _check_radiograph_sizes(params: dict[str, Any], source: str, size: Any) -> None:
    """The phantom radiographs have the originals' size the 2D preprocessing expects, and
    no 2D pretraining crop is larger than the stored radiograph."""
    data, radiographs = params["data"], params.get("resample", {}).get("chestxray14", {})
    expected = radiographs.get("expected_size")
    phantom = data.get("phantom", {}).get("chestxray14", {}).get("size", [256, 256])  # its default
    if expected and "chestxray14" in data["datasets"] and source_of(data, "chestxray14") == "phantom" \
            and list(phantom) != list(expected):
        raise ConfigError(f"{source}: resample.chestxray14.expected_size: {list(expected)} differs from the "
                          f"phantom's data.phantom.chestxray14.size {list(phantom)} (both width, height)")
    crops = params.get("cubes", {}).get(SETTINGS["2d"].pretrain_task, {}).get("crop_sizes", [])
    large = [list(c) for c in crops if size and (int(c[0]) > int(size[1]) or int(c[1]) > int(size[0]))]
    if large:
        raise ConfigError(f"{source}: cubes.{SETTINGS['2d'].pretrain_task}.crop_sizes: {large} (x, y) larger "
                          f"than the stored radiograph, resample.chestxray14.size {list(size)} (height, width)")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read and validate a params file; ConfigError names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    params = validate_params(load_yaml(path), str(path))
    check_local_paths(params, path.resolve().parent, str(path))
    return params


def section(params: dict[str, Any], *keys: str) -> Any:
    """``params[k1][k2]...`` with a ConfigError naming the dotted key when absent."""
    node: Any = params
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"params: missing section {'.'.join(keys[: i + 1])}")
        node = node[key]
    return node
