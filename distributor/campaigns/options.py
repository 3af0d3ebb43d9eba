"""Starting a campaign from the options the command, the web form and the API
give, by the command's option names (``tasks``, ``utilisation``, ``periods``,
``pkg``, ``singles``, ``max_size`` …), as text or numbers. Every check raises
``generate.ParameterError`` naming the command option at fault (the form
and the API name the field without the dashes: ``max_size`` for ``--max-size``)."""
from __future__ import annotations

from distributor.campaigns import generate, services
from distributor.campaigns.models import Campaign
from distributor.models import Target

RANDOM_OPTIONS = ("tasks", "utilisation", "periods", "distribution", "pkg", "count", "jobs", "priorities")
# Task fields a growing campaign draws, with the option that gives each.
GROW_FIELDS = ("arg1", "priority", "deadline", "period", "offset", "numberofjobs", "criticaltime", "caps",
               "cores", "coreoffset")
GROW_OPTIONS = ("singles", "max_size", "max_per_level", "pkg", "quota", *GROW_FIELDS)
COMMON_OPTIONS = ("name", "target", "seed")
DISTRIBUTIONS = ("uniform", "loguniform")
PRIORITIES = ("rm", "edf", "random")
MAX_SEED = 2**63 - 1


def start(kind: str, options: dict, owner=None) -> Campaign:
    """A new campaign of ``kind`` ("random" or "grow"); its first level is submitted."""
    if kind == Campaign.Kind.RANDOM:
        return start_random(options, owner)
    if kind == Campaign.Kind.GROW:
        return start_growing(options, owner)
    raise generate.ParameterError("--kind", f"must be {Campaign.Kind.RANDOM} or {Campaign.Kind.GROW}")


def start_random(options: dict, owner=None) -> Campaign:
    _known(options, RANDOM_OPTIONS)
    seed = _seed(options)
    tasks = _integer(options, "tasks", 1, 64)
    count = _integer(options, "count", 1, services.MAX_PER_LEVEL)
    jobs = _integer(options, "jobs", 1, 10**6, default=5)
    periods = generate.parse_choice("--periods", _text(options, "periods"))
    if min(periods.get("list") or periods["range"][:2]) < 1:
        raise generate.ParameterError("--periods", "must be at least 1 ms")
    utilisation = _text(options, "utilisation")
    params = generate.RandomParams(
        tasks=tasks, utilisation=generate.parse_span("--utilisation", utilisation, 0.0, 64.0), periods=periods,
        distribution=_one_of(options, "distribution", DISTRIBUTIONS, "loguniform"),
        packages=generate.parse_weights("--pkg", _text(options, "pkg")), count=count, jobs=jobs,
        priorities=_one_of(options, "priorities", PRIORITIES, "rm"),
    )
    name = _text(options, "name", "") or f"random n={tasks} U={utilisation} seed={seed}"
    return services.create_random(name[:200], _target(options), params, seed, owner=owner)


def start_growing(options: dict, owner=None) -> Campaign:
    _known(options, GROW_OPTIONS)
    seed = _seed(options)
    fields = {"pkg": generate.parse_choice("--pkg", _text(options, "pkg"), integer=False)}
    if _text(options, "quota", ""):
        fields["quota"] = generate.parse_choice("--quota", _text(options, "quota"), integer=False)
    for field in GROW_FIELDS:
        if _text(options, field, ""):
            fields[field] = generate.parse_choice(f"--{field}", _text(options, field))
    max_size = _integer(options, "max_size", 1, 64, default=4)
    name = _text(options, "name", "") or f"grow to {max_size} seed={seed}"
    return services.create_growing(
        name[:200], _target(options), fields, _integer(options, "singles", 1, services.MAX_PER_LEVEL), max_size,
        seed, _integer(options, "max_per_level", 1, services.MAX_PER_LEVEL, default=services.DEFAULT_MAX_PER_LEVEL),
        owner=owner)


# -- one option at a time ------------------------------------------------------------


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _known(options: dict, kind_options: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(kind_options) - set(COMMON_OPTIONS))
    if unknown:
        raise generate.ParameterError(_option(unknown[0]), "unknown option for this kind of campaign")


def _present(value) -> bool:
    return value is not None and value != ""


def _text(options: dict, key: str, default: str | None = None) -> str:
    value = options.get(key)
    if not _present(value):
        if default is None:
            raise generate.ParameterError(_option(key), "required")
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise generate.ParameterError(_option(key), "must be text or a number")
    return str(value).strip()


def _integer(options: dict, key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = options.get(key)
    if not _present(value):
        if default is None:
            raise generate.ParameterError(_option(key), "required")
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value.strip()) <= 20:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise generate.ParameterError(_option(key), f"must be an integer from {lo} to {hi}")
    return value


def _seed(options: dict) -> int:
    return _integer(options, "seed", 0, MAX_SEED)


def _one_of(options: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(options, key, default)
    if value not in choices:
        raise generate.ParameterError(_option(key), f"must be one of {', '.join(choices)}")
    return value


def _target(options: dict) -> Target:
    name = _text(options, "target", "")
    if not name:
        return Target.default()
    target = Target.objects.filter(name=name).first()
    if target is None:
        raise generate.ParameterError("--target", f"no target named {name!r}")
    return target
