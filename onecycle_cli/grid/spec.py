"""The members of a grid: `onecycle grid --config mnist_sample --vary schedule.max_lr=0.01,0.1 --seeds 2`.

A member is one value per varied key and one seed; the members are the cartesian product, in the
order the keys were given, seeds innermost. Every member's config is resolved by the same
`config.resolve` as `--set`, before anything starts, so a bad value in the 40th member is exit 2
with the same one line (naming the member's values), and nothing has run.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction

from ..config import PATH_KEYS, Resolved, parse_scalar, parse_set, resolve
from ..errors import ConfigError, UsageError

MAX_MEMBERS = 10_000  # each member is a whole training run: a typo of a few digits must not queue millions
DEFAULT_FACTORS = "1/4,1/2,1,2,4"  # an octave either side of the suggestion, and two


@dataclass
class Vary:
    """One `--vary KEY=V1,V2,...`: the key, each value as typed (what a member passes as --set) and as read."""

    key: str
    texts: list[str]
    values: list = field(default_factory=list)


def typed(key: str, text: str, source: str):
    """A value as `--set` reads it: YAML 1.2, except a path, which is the text as given."""
    return text if key in PATH_KEYS else parse_scalar(text, source)


def _same(value) -> object:
    """What makes two values the same grid point: 1 and 1.0 are one learning rate."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("number", float(value))
    return ("other", repr(value))


def parse_vary(item: str) -> Vary:
    """`--vary KEY=V1,V2,...`: the key's form checked as --set checks it, the list non-empty and distinct."""
    try:
        key, text = parse_set(item)
    except ConfigError:  # parse_set words it for --set
        raise UsageError(f"--vary {item!r}: expected section.key=V1,V2,..., e.g. --vary schedule.max_lr=0.1,0.2"
                         ) from None
    if key == "train.seed":
        raise UsageError(f"--vary {item!r}: seeds are --seeds (--seeds 3, or --seeds 0,1,2), not --vary train.seed")
    texts = text.split(",")
    if not text.strip() or any(not t.strip() for t in texts):
        raise UsageError(f"--vary {item!r}: expected a non-empty list of values, e.g. --vary {key}=0.1,0.2")
    if len(texts) > MAX_MEMBERS:
        raise UsageError(f"--vary {key}: {len(texts):,} values, more than the {MAX_MEMBERS:,} members a grid takes")
    values = [typed(key, t, f"--vary {key}={t}") for t in texts]
    seen: dict[object, str] = {}
    for t, v in zip(texts, values):
        if _same(v) in seen:
            raise UsageError(f"--vary {item!r}: {t!r} is the same value as {seen[_same(v)]!r}; give each value once")
        seen[_same(v)] = t
    return Vary(key, texts, values)


def parse_factors(text: str) -> list[float]:
    """`--factors 1/4,1/2,1,2,4`: distinct finite numbers > 0, fractions written as a/b allowed."""
    try:
        factors = [float(Fraction(t.strip())) for t in text.split(",")]
    except (ValueError, ZeroDivisionError):
        factors = []
    if not factors or any(not math.isfinite(f) or f <= 0 for f in factors) or len(set(factors)) != len(factors):
        raise UsageError(f"--factors {text!r}: expected distinct numbers > 0, e.g. --factors {DEFAULT_FACTORS}")
    return factors


@dataclass
class Member:
    index: int
    texts: dict[str, str]   # key -> the value as typed, passed to `train` as --set key=text
    values: dict             # key -> the value as the config reads it (for the table and the picture)
    seed: int

    def label(self) -> str:
        return ", ".join([*(f"{k}={t}" for k, t in self.texts.items()), f"seed {self.seed}"])


def count(varies: list[Vary], seeds: list[int]) -> int:
    return math.prod(len(v.texts) for v in varies) * len(seeds)


def check_count(varies: list[Vary], seeds: list[int]) -> int:
    n = count(varies, seeds)
    if n > MAX_MEMBERS:
        sizes = " x ".join([*(str(len(v.texts)) for v in varies), f"{len(seeds)} seeds"])
        raise UsageError(f"a grid of {n:,} members ({sizes}) is more than the {MAX_MEMBERS:,} a grid takes: "
                         f"fewer values or seeds")
    return n


def members(varies: list[Vary], seeds: list[int]) -> list[Member]:
    """The cartesian product, keys in the order given, seeds innermost (a point's seeds run side by side)."""
    check_count(varies, seeds)
    out = []
    for combo in itertools.product(*[range(len(v.texts)) for v in varies]):
        for seed in seeds:
            out.append(Member(len(out), {v.key: v.texts[i] for v, i in zip(varies, combo)},
                              {v.key: v.values[i] for v, i in zip(varies, combo)}, seed))
    return out


def check_keys(varies: list[Vary], sets: list[str], flags: dict) -> None:
    """A key varied twice, or also set by --set or a named flag, has no single meaning: refused."""
    seen: set[str] = set()
    fixed = {parse_set(s)[0]: f"--set {s}" for s in sets}
    fixed.update({key: flag for key, (flag, value) in flags.items() if value is not None})
    if "train.seed" in fixed and fixed["train.seed"].startswith("--set"):
        raise UsageError(f"{fixed['train.seed']}: a grid's seeds are --seed (one) or --seeds (several)")
    for v in varies:
        if v.key in seen:
            raise UsageError(f"--vary {v.key} is given twice; give each key once with all its values")
        if v.key in fixed:
            raise UsageError(f"conflicting flags: --vary {v.key}=... and {fixed[v.key]} both set {v.key}; give one")
        seen.add(v.key)


def resolve_member(config: str | None, sets: list[str], flags: dict, member: Member, of: int) -> Resolved:
    """The member's config, resolved exactly as `train --set ... --seed S` will resolve it; a ConfigError
    says which member (its values) and what is wrong, in the one line --set would give."""
    member_flags = {**flags, "train.seed": ("--seed", str(member.seed))}
    member_flags.update({k: ("--vary", t) for k, t in member.texts.items()})
    try:
        return resolve(config, sets, member_flags)
    except ConfigError as e:
        raise ConfigError(f"member {member.index + 1} of {of} ({member.label()}): {e}") from None


def validate(config: str | None, sets: list[str], flags: dict, grid: list[Member]) -> Resolved:
    """Every member resolved before the first starts; the first member's resolution (its runs root, its name).

    One resolution per grid point: the seeds of a point differ only in train.seed, which --seeds checked."""
    first = None
    done: set[tuple] = set()
    for m in grid:
        point = tuple(m.texts.items())
        if point in done:
            continue
        done.add(point)
        resolved = resolve_member(config, sets, flags, m, len(grid))
        first = first or resolved
    if first is None:
        raise UsageError("a grid with no members: give --vary KEY=V1,V2,... and/or --seeds")
    return first


@dataclass
class Plan:
    """A grid as given, checked: what `launch` runs and grid.json keeps (so --resume needs nothing else)."""

    config: str | None
    sets: list[str]
    flags: dict                     # config key -> (flag, text) of the named train flags given
    varies: list[Vary]
    seeds: list[int]
    factors: list[float] | None     # --around find: schedule.max_lr = the suggestion x each factor
    resolved: Resolved              # the first member's config: the runs root and the config's name
    members: list[Member]           # empty for --around find until the range test has suggested

    @property
    def size(self) -> int:
        return count(self.varies, self.seeds) * (len(self.factors) if self.factors else 1)

    def describe(self) -> str:
        sizes = [f"{len(v.texts)} {v.key}" for v in self.varies] + [f"{len(self.seeds)} seed"
                                                                     + "s" * (len(self.seeds) != 1)]
        if self.factors:
            sizes.insert(0, f"{len(self.factors)} schedule.max_lr (the range test's suggestion x "
                            + ",".join(f"{f:g}" for f in self.factors) + ")")
        return f"{self.size:,} member{'s' * (self.size != 1)} ({' x '.join(sizes)})"


def plan(config: str | None, sets: list[str], flags: dict, vary: list[str], seeds: list[int], around: str | None,
         factors: str | None) -> Plan:
    """Every check a grid takes before it starts: the specs, the count, and each member's config."""
    varies = [parse_vary(v) for v in vary]
    check_keys(varies, sets, flags)
    found = None
    if around is not None:
        if around != "find":
            raise UsageError(f"--around {around!r}: expected --around find (the range test's suggestion)")
        if "schedule.max_lr" in [v.key for v in varies] + [parse_set(s)[0] for s in sets] + list(flags):
            raise UsageError("--around find varies schedule.max_lr itself (the suggestion x --factors): "
                             "give no --vary schedule.max_lr, --set schedule.max_lr or --max-lr")
        found = parse_factors(factors or DEFAULT_FACTORS)
    elif factors is not None:
        raise UsageError("--factors goes with --around find")
    n = check_count(varies, seeds) * (len(found) if found else 1)
    if n > MAX_MEMBERS:
        raise UsageError(f"a grid of {n:,} members is more than the {MAX_MEMBERS:,} a grid takes: fewer values, "
                         f"factors or seeds")
    grid = members(varies, seeds)
    # with --around find every other key and seed is checked now, at the config's max_lr; the
    # suggestion's multiples are checked again once the range test has given them (around_members)
    resolved = validate(config, sets, flags, grid)
    return Plan(config, sets, flags, varies, seeds, found, resolved, [] if found else grid)


def around_members(p: Plan, lr: float) -> list[Member]:
    """--around find, once the range test has suggested `lr`: schedule.max_lr = lr x each factor, first."""
    texts = [f"{lr * f:.6g}" for f in p.factors]  # six digits: enough for any schedule, short in a table
    lrs = Vary("schedule.max_lr", texts, [float(t) for t in texts])
    if len(set(texts)) != len(texts):
        raise UsageError(f"--factors: at six digits two of them give the same max_lr ({', '.join(texts)})")
    grid = members([lrs, *p.varies], p.seeds)
    validate(p.config, p.sets, p.flags, grid)
    return grid
