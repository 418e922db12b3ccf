"""Procedural coin catalog: rulers → types → dies → individual coins.

A ruler (emperor) owns the obverse design (a portrait and a legend); a type (a RIC number)
belongs to one ruler and has a reverse design (a figure or symbol and a legend). Types are dealt
to rulers in rounds (type t to ruler t mod rulers); a type of the first round has its own design,
and a later one, with probability `shared_reverses`, reuses the design of an earlier type of
another ruler, as imperial mints reused reverse types (VIRTVS AVG under Aurelian and under
Probus) under each emperor's own catalogue number. A reused type came on the same denomination,
so the design is taken from a ruler who strikes the same metal where one does (from any other
ruler where none does). Such a pair looks alike on the reverse and only the obverse tells it
apart. Every type's design is cut into its own dies (a shared design
too: each emperor's mint cut its own), which differ slightly, as hand-cut dies do. Coins struck
from the same pair of dies differ only in what identifies a physical coin: flan outline,
off-centre strike, die-axis rotation, wear, scratches, nicks, edge damage, porosity and toning.

Every number here is a pure function of (catalog seed, what is asked for): the same catalog
always yields the same coins, and a coin's record does not depend on how many other coins the
catalog holds. Geometry is in units of the nominal flan radius (the flan is ~1.0 across).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Side = Literal["obverse", "reverse"]
SIDES: tuple[Side, ...] = ("obverse", "reverse")
Metal = Literal["silver", "billon", "bronze"]
Crown = Literal["laurel", "radiate", "diadem"]
_METALS: tuple[Metal, ...] = ("silver", "billon", "bronze")
_CROWNS: tuple[Crown, ...] = ("laurel", "radiate", "diadem")
Figure = Literal["standing", "eagle", "altar", "standards"]

_COIN_ID = re.compile(r"^SIM-(\d{4,})$")
# rulers, types and dies per design of `rig simulate`'s default catalog (rig.config)
_DEFAULT_SHAPE = (3, 6, 2)
# the fraction of later-round types that reuse another ruler's reverse design, by default
DEFAULT_SHARED_REVERSES = 0.5
_NAME_HEADS = ("AVRE", "VALEN", "GALL", "TRAI", "CONST", "MAX", "DIOC", "PROB", "SEVER", "GORD")
_NAME_TAILS = ("LIANVS", "TINIANVS", "IENVS", "ANVS", "ANTIVS", "IMINVS", "LETIANVS", "VS")
_REVERSE_LEGENDS = (
    "CONCORDIA MILITVM",
    "VIRTVS AVG",
    "PAX AETERNA",
    "FIDES EXERCITVS",
    "SOLI INVICTO",
    "VICTORIA AVG",
    "PROVIDENTIA DEORVM",
    "IOVI CONSERVATORI",
    "SALVS AVG",
    "ORIENS AVG",
    "SECVRITAS PERPETVA",
    "GENIO POP ROM",
    "MARTI PACIFERO",
    "SPES PVBLICA",
)
_FIGURES: tuple[Figure, ...] = ("standing", "standing", "eagle", "altar", "standards")


class UnknownCoin(LookupError):
    """A coin id that the simulated catalog does not hold."""


def stable_rng(*key: object) -> np.random.Generator:
    """A generator seeded from a stable hash of `key` (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass(frozen=True)
class Variation:
    """Which individual-coin features are switched on (all off: coins differ only by dies)."""

    flan: bool = True
    strike: bool = True
    wear: bool = True
    damage: bool = True
    toning: bool = True

    @classmethod
    def none(cls) -> Variation:
        """Every coin struck from the same dies comes out identical."""
        return cls(flan=False, strike=False, wear=False, damage=False, toning=False)


@dataclass(frozen=True)
class Ruler:
    """An emperor: the obverse design (portrait parameters and legend)."""

    index: int
    name: str
    legend: str
    metal: Metal
    portrait: dict[str, float]
    crown: Crown


@dataclass(frozen=True)
class CoinType:
    """A reverse type of one ruler (a RIC number): figure template, its parameters, legend."""

    index: int
    ruler: int
    number: int
    legend: str
    figure: Figure
    params: dict[str, float]
    design: int  # the type whose reverse design this one follows: itself, or a shared one

    @property
    def shared(self) -> bool:
        """Whether this type reuses another ruler's reverse design."""
        return self.design != self.index

    @property
    def catalog_ref(self) -> str:
        """A RIC-style reference such as `RIC-SIM 2.17`."""
        return f"RIC-SIM {self.ruler + 1}.{self.number}"


@dataclass(frozen=True)
class Die:
    """One die cut after a design: small jitters of position, scale and legend placement."""

    side: Side
    design: int
    index: int
    jitter: dict[str, float]


@dataclass(frozen=True)
class Mark:
    """A scratch (polyline), nick (pit) or edge bite, in flan-radius units."""

    kind: Literal["scratch", "nick", "edge"]
    points: tuple[tuple[float, float], ...]
    size: float
    depth: float


@dataclass(frozen=True)
class Coin:
    """One physical coin: its dies and everything that tells it apart from its die-siblings."""

    coin_id: str
    index: int
    ruler: int
    type_index: int
    dies: dict[Side, int]
    flan_radius: float
    flan_harmonics: tuple[tuple[float, float], ...]
    strike_offset: dict[Side, tuple[float, float]]
    design_rotation_deg: dict[Side, float]
    weak_strike: dict[Side, tuple[float, float]]
    wear: float
    marks: dict[Side, tuple[Mark, ...]]
    edge_bites: tuple[Mark, ...]
    porosity: float
    patina: tuple[tuple[float, float, float], tuple[float, float, float]]
    patina_strength: float
    texture_seed: int = field(default=0)

    @property
    def die_axis_h(self) -> float:
        """Die axis on the clock face (12 = aligned), as numismatists record it."""
        rel = (self.design_rotation_deg["reverse"] - self.design_rotation_deg["obverse"]) % 360
        return (rel / 30.0) % 12 or 12.0


class CoinCatalog:
    """A deterministic catalog of simulated coins, ids `SIM-0000` … `SIM-{coins-1:04d}`."""

    def __init__(
        self,
        seed: int = 0,
        rulers: int = 3,
        types: int = 6,
        coins: int = 24,
        dies_per_design: int = 2,
        variation: Variation | None = None,
        shared_reverses: float = DEFAULT_SHARED_REVERSES,
    ) -> None:
        if min(rulers, types, coins, dies_per_design) < 1:
            raise ValueError("rulers, types, coins and dies_per_design must all be >= 1")
        if not 0.0 <= shared_reverses <= 1.0:  # NaN fails too
            raise ValueError(f"shared_reverses must lie in [0, 1], got {shared_reverses!r}")
        self.seed = seed
        self.n_rulers = rulers
        self.n_types = max(types, rulers)  # every ruler gets at least one type
        self.n_coins = coins
        self.dies_per_design = dies_per_design
        self.variation = variation or Variation()
        self.shared_reverses = float(shared_reverses)
        self.rulers = [self._make_ruler(i) for i in range(rulers)]
        self.types: list[CoinType] = []
        for t in range(self.n_types):  # a type may share the design of an earlier one
            self.types.append(self._share(self._make_type(t)))
        self._coins: dict[int, Coin] = {}

    @property
    def key(self) -> tuple[object, ...]:
        """What identifies this catalog's pixels (cache key for rendered surfaces)."""
        return (
            self.seed,
            self.n_rulers,
            self.n_types,
            self.dies_per_design,
            self.variation,
            self.shared_reverses,
        )

    @property
    def collection(self) -> str:
        """The collection its coins belong to: the seed, and the catalog's shape if not default.

        SIM-0001 is another coin under another seed, or other rulers, types or dies, so each
        such catalog is its own collection (coins are told apart by collection and id:
        docs/dataset-format.md). The default shape keeps the plain `sim-seed-N` name that
        earlier datasets carry, so resuming into them still works; another share of reverse
        designs adds `-sF` (another share gives other types the same numbers).
        """
        name = f"sim-seed-{self.seed}"
        shape = (self.n_rulers, self.n_types, self.dies_per_design)
        shared = self.shared_reverses != DEFAULT_SHARED_REVERSES
        if shape != _DEFAULT_SHAPE or self.variation != Variation() or shared:
            name += f"-r{shape[0]}-t{shape[1]}-d{shape[2]}"
            if shared:
                name += f"-s{self.shared_reverses:g}"
            if self.variation != Variation():
                off = [k for k, v in asdict(self.variation).items() if not v]
                name += "-no-" + "-".join(off)
        return name

    def coin_ids(self) -> list[str]:
        """Every coin id, in order."""
        return [f"SIM-{i:04d}" for i in range(self.n_coins)]

    def coin(self, coin_id: str) -> Coin:
        """The coin with this id.

        Raises:
            UnknownCoin: the id is not of the form SIM-NNNN or beyond the catalog size.
        """
        match = _COIN_ID.match(coin_id)
        index = int(match.group(1)) if match else -1
        if not 0 <= index < self.n_coins:
            raise UnknownCoin(
                f"no simulated coin {coin_id!r}; ids run SIM-0000..SIM-{self.n_coins - 1:04d}"
            )
        if index not in self._coins:
            self._coins[index] = self._make_coin(index)
        return self._coins[index]

    def die(self, side: Side, design: int, index: int) -> Die:
        """Die `index` of a ruler's obverse or a type's reverse (`design`: ruler or type index).

        A type that shares another's reverse design has dies of its own: each emperor's mint
        cut its own dies of the design, so two rulers' coins of it are never die-siblings.
        """
        rng = stable_rng(self.seed, "die", side, design, index)
        jitter = {
            "dx": rng.normal(0, 0.015),
            "dy": rng.normal(0, 0.015),
            "scale": 1 + rng.normal(0, 0.025),
            "rot": rng.normal(0, 2.5),
            "legend_phase": rng.normal(0, 4.0),
            "legend_size": 1 + rng.normal(0, 0.04),
            "beads": float(rng.integers(56, 76)),
            "seed": float(rng.integers(0, 2**31)),
        }
        return Die(side, design, index, jitter)

    def record(self, coin_id: str) -> dict[str, Any]:
        """A coins.jsonl line: coin_id, collection, ruler, type, catalog_ref, notes."""
        coin = self.coin(coin_id)
        ctype = self.types[coin.type_index]
        return {
            "coin_id": coin.coin_id,
            "collection": self.collection,
            "ruler": self.rulers[coin.ruler].name,
            "type": f"{ctype.legend} ({ctype.figure})",
            "catalog_ref": ctype.catalog_ref,
            "notes": (
                f"{self.rulers[coin.ruler].metal}; dies O{coin.dies['obverse']} "
                f"R{coin.dies['reverse']}; die axis {coin.die_axis_h:.0f}h; wear {coin.wear:.2f}"
            ),
        }

    def coins_of_type(self, type_index: int) -> list[str]:
        """Ids of every coin of one type."""
        return [c for c in self.coin_ids() if self.coin(c).type_index == type_index]

    # ------------------------------------------------------------ generation

    def _make_ruler(self, i: int) -> Ruler:
        rng = stable_rng(self.seed, "ruler", i)
        name = str(rng.choice(_NAME_HEADS)) + str(rng.choice(_NAME_TAILS))
        title = str(rng.choice(["IMP C", "IMP", "D N"]))
        suffix = str(rng.choice(["P F AVG", "AVG", "P AVG", "PIVS AVG"]))
        portrait = {
            "head": rng.uniform(0.30, 0.36),  # cranium radius
            "nose": rng.uniform(0.07, 0.13),
            "jaw": rng.uniform(0.85, 1.15),
            "neck": rng.uniform(0.16, 0.22),
            "bust": rng.uniform(0.45, 0.6),
            "beard": float(rng.random() < 0.5),
            "brow": rng.uniform(-0.03, 0.03),
        }
        metal = _METALS[int(rng.integers(0, 3))]
        crown = _CROWNS[int(rng.integers(0, 3))]
        return Ruler(i, name.title(), f"{title} {name} {suffix}", metal, portrait, crown)

    def _make_type(self, t: int) -> CoinType:
        rng = stable_rng(self.seed, "type", t)
        ruler = t % self.n_rulers
        params = {
            "facing": float(rng.choice([-1.0, 1.0])),
            "height": rng.uniform(0.95, 1.15),
            "item_left": float(rng.integers(0, 3)),
            "item_right": float(rng.integers(0, 3)),
            "wings": rng.uniform(0.8, 1.2),
            "exergue": float(rng.random() < 0.6),
        }
        legend = str(rng.choice(_REVERSE_LEGENDS))
        figure = _FIGURES[int(rng.integers(0, len(_FIGURES)))]
        return CoinType(
            t,
            ruler,
            10 + 7 * (t // self.n_rulers) + int(rng.integers(0, 7)),
            legend,
            figure,
            params,
            design=t,
        )

    def _share(self, own: CoinType) -> CoinType:
        """`own`, or it with the design of an earlier own-design type of another ruler.

        The draws come from their own generator, after every draw of `_make_type`, so with
        `shared_reverses` 0 every type, coin and pixel is what a catalog without sharing makes.
        """
        t = own.index
        if t < self.n_rulers:  # the first round: every ruler's first type is its own design
            return own
        rng = stable_rng(self.seed, "share", t)
        if not rng.random() < self.shared_reverses:
            return own
        mine = [u for u in self.types if u.ruler == own.ruler]
        # a design, or a reverse type (legend and figure), this ruler already strikes is no source
        used = {u.design for u in mine} | {(u.legend, u.figure) for u in mine}
        sources = [
            u.index
            for u in self.types
            if not u.shared and u.ruler != own.ruler and not {u.index, (u.legend, u.figure)} & used
        ]
        # a reused type came on the same denomination: a ruler of the same metal where there is one
        metal = self.rulers[own.ruler].metal
        sources = [u for u in sources if self.rulers[self.types[u].ruler].metal == metal] or sources
        if not sources:
            return own
        source = self.types[int(sources[int(rng.integers(0, len(sources)))])]
        return CoinType(
            t,
            own.ruler,
            own.number,  # its own catalogue number under its own ruler
            source.legend,
            source.figure,
            dict(source.params),
            design=source.index,
        )

    def _make_coin(self, i: int) -> Coin:
        rng = stable_rng(self.seed, "coin", i)
        var = self.variation
        type_index = int(rng.integers(0, self.n_types))
        ruler = self.types[type_index].ruler
        dies: dict[Side, int] = {
            "obverse": int(rng.integers(0, self.dies_per_design)),
            "reverse": int(rng.integers(0, self.dies_per_design)),
        }
        # every draw happens whether or not the feature is on, so switching one feature off
        # leaves the others of the same coin unchanged
        harmonics = tuple(
            (float(rng.normal(0, 0.035 / k)), float(rng.uniform(0, 2 * math.pi)))
            for k in range(2, 7)
        )
        flan_radius = float(rng.uniform(0.93, 1.03))
        offsets = {s: _polar(rng.exponential(0.05), rng.uniform(0, 2 * math.pi)) for s in SIDES}
        obverse_rot = float(rng.normal(0, 6))
        axis = float(rng.choice([0.0, 180.0, 150.0, 210.0, 30.0]) + rng.normal(0, 10))
        weak = {s: (float(rng.uniform(0, 360)), float(rng.uniform(0, 0.5))) for s in SIDES}
        wear = float(np.clip(rng.beta(2.0, 2.5), 0.05, 0.95))
        marks = {s: self._marks(rng) for s in SIDES}
        bites = tuple(
            Mark(
                "edge",
                ((float(rng.uniform(0, 360)), 0.0),),
                float(rng.uniform(8, 25)),
                float(rng.uniform(0.03, 0.09)),
            )
            for _ in range(int(rng.integers(0, 4)))
        )
        porosity = float(rng.beta(1.2, 4.0))
        patina = _patina(self.rulers[ruler].metal, rng)
        patina_strength = float(rng.uniform(0.2, 0.85))
        texture_seed = int(rng.integers(0, 2**31))
        if not var.flan:
            harmonics, flan_radius = tuple((0.0, p) for _, p in harmonics), 1.0
        if not var.strike:
            offsets = {s: (0.0, 0.0) for s in SIDES}
            obverse_rot, axis = 0.0, 0.0
            weak = {s: (0.0, 0.0) for s in SIDES}
        if not var.wear:
            wear, porosity = 0.3, 0.0  # an even, average wear shared by every coin
        if not var.damage:
            marks, bites = {s: () for s in SIDES}, ()
        if not var.toning:
            patina, patina_strength, texture_seed = _patina(self.rulers[ruler].metal, None), 0.4, 0
        return Coin(
            coin_id=f"SIM-{i:04d}",
            index=i,
            ruler=ruler,
            type_index=type_index,
            dies=dies,
            flan_radius=flan_radius,
            flan_harmonics=harmonics,
            strike_offset=offsets,
            design_rotation_deg={"obverse": obverse_rot, "reverse": obverse_rot + axis},
            weak_strike=weak,
            wear=wear,
            marks=marks,
            edge_bites=bites,
            porosity=porosity,
            patina=patina,
            patina_strength=patina_strength,
            texture_seed=texture_seed,
        )

    @staticmethod
    def _marks(rng: np.random.Generator) -> tuple[Mark, ...]:
        found: list[Mark] = []
        for _ in range(int(rng.integers(1, 5))):
            start = _polar(0.85 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
            heading, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.7)
            bend = rng.normal(0, 0.4)
            points = []
            for step in np.linspace(0, 1, 6):
                angle = heading + bend * step
                points.append(
                    (
                        start[0] + length * step * math.cos(angle),
                        start[1] + length * step * math.sin(angle),
                    )
                )
            found.append(
                Mark(
                    "scratch",
                    tuple(points),
                    float(rng.uniform(0.006, 0.014)),
                    float(rng.uniform(0.3, 0.8)),
                )
            )
        for _ in range(int(rng.integers(1, 6))):
            centre = _polar(0.9 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
            found.append(
                Mark(
                    "nick",
                    (centre,),
                    float(rng.uniform(0.018, 0.045)),
                    float(rng.uniform(0.4, 1.0)),
                )
            )
        return tuple(found)


def _polar(radius: float, angle: float) -> tuple[float, float]:
    return (float(radius * math.cos(angle)), float(radius * math.sin(angle)))


def _patina(
    metal: Metal, rng: np.random.Generator | None
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Two linear-RGB colours the surface tones between (base metal, then patina)."""
    base = {
        "silver": (0.80, 0.80, 0.78),
        "billon": (0.62, 0.58, 0.52),
        "bronze": (0.62, 0.42, 0.26),
    }[metal]
    choices = {
        "silver": [(0.55, 0.48, 0.38), (0.42, 0.40, 0.42), (0.60, 0.52, 0.55)],
        "billon": [(0.40, 0.36, 0.32), (0.30, 0.30, 0.30), (0.45, 0.38, 0.28)],
        "bronze": [(0.20, 0.32, 0.22), (0.30, 0.20, 0.12), (0.22, 0.18, 0.15)],
    }[metal]
    tone = choices[0] if rng is None else choices[int(rng.integers(0, len(choices)))]
    return base, tone
