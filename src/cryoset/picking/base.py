"""The picker interface: prepare the micrograph → score map → peaks → picks, and the registry.

Every picker (:mod:`~cryoset.picking.blob`, :mod:`~cryoset.picking.template`,
:mod:`~cryoset.picking.imported`, and any new one) is a subclass of :class:`Picker` in its
own file under ``picking/``, registered by name with :func:`register_picker`; a new picker
is that one file (:func:`available_pickers` imports every module of the package). The four
steps are separate methods so that a caller can inspect the score map or the raw peaks;
:meth:`Picker.pick` runs them in order.

>>> sorted(available_pickers())
['blob', 'features', 'import', 'template']
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Peaks",
    "Picker",
    "PickerInputs",
    "PreparedMicrograph",
    "ScoreMap",
    "available_pickers",
    "picker_class",
    "register_picker",
]


@dataclass(frozen=True)
class PreparedMicrograph:
    """A micrograph made ready for scoring.

    Attributes
    ----------
    image : ndarray, float32, shape (ny, nx)
        The micrograph as given.
    work : ndarray, float32, shape (my, mx)
        The down-sampled, normalised working image (protein bright).
    factor
        Down-sampling factor: working pixel = ``factor`` micrograph pixels.
    pixel_size_a
        Micrograph pixel size (Å).
    diameter_px
        Particle diameter in micrograph pixels.
    """

    image: NDArray[np.float32]
    work: NDArray[np.float32]
    factor: float
    pixel_size_a: float
    diameter_px: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the micrograph."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def diameter_work_px(self) -> float:
        """Particle diameter in working pixels."""
        return self.diameter_px / self.factor


@dataclass(frozen=True)
class ScoreMap:
    """The score of every working pixel (None for pickers that score given positions only).

    ``extra`` holds per-pixel maps a picker's :meth:`Picker.picks` needs (e.g. the best
    template of every pixel).
    """

    values: NDArray[np.floating] | None
    extra: dict[str, NDArray[np.generic]] = field(default_factory=dict)


@dataclass(frozen=True)
class Peaks:
    """Candidate particles: centres in micrograph pixels ``xy`` (x, y), their score
    ``values``, the same centres in working pixels ``xy_work``, and for pickers that start
    from a table its kept ``rows``."""

    xy: NDArray[np.float64]
    values: NDArray[np.floating]
    xy_work: NDArray[np.float64]
    rows: pd.DataFrame | None = None


@dataclass(frozen=True)
class PickerInputs:
    """Everything a picker may be built from, for one micrograph (:meth:`Picker.from_inputs`).

    A caller (the pick workflow) reads the files a picker :attr:`~Picker.needs` and fills the
    matching fields; the others stay None.

    Attributes
    ----------
    diameter_a
        Particle diameter (Å).
    pixel_size_a
        Pixel size of the micrograph to pick (Å).
    threshold
        Score threshold; None: the picker's :attr:`~Picker.default_threshold`.
    min_distance_fraction, dark_particles
        As in :class:`cryoset.picking.blob.BlobSettings`.
    templates, template_pixel_size_a, template_source
        Template stack ``(n, b, b)`` (protein bright), its pixel size (Å; None: the
        micrograph's) and the file it came from (named in errors); for pickers that need
        ``"templates"``.
    picks
        Canonical picks table of this micrograph, for pickers that need ``"picks"``.
    featurizer, featurizer_input_px
        Windows ``(B, w, w)`` of the micrograph → encoder features ``(B, D)``, and the
        encoder's input size (px); for pickers that need ``"featurizer"`` (built by the
        caller from a checkpoint, so that ``picking`` never loads a model).
    """

    diameter_a: float
    pixel_size_a: float
    threshold: float | None = None
    min_distance_fraction: float = 0.5
    dark_particles: bool = True
    templates: NDArray[np.float64] | None = None
    template_pixel_size_a: float | None = None
    template_source: str | os.PathLike[str] = "templates"
    picks: pd.DataFrame | None = None
    featurizer: Callable[[NDArray[np.float32]], NDArray[np.floating]] | None = None
    featurizer_input_px: int | None = None


class Picker(ABC):
    """One particle picker: four steps from a micrograph to a canonical picks table."""

    #: The name it is registered (and chosen on the command line) under.
    name: ClassVar[str]
    #: The score threshold used when none is given (None: keep every pick).
    default_threshold: ClassVar[float | None] = None
    #: The :class:`PickerInputs` fields a caller must fill besides the diameter and pixel
    #: size (``"templates"``, ``"picks"``).
    needs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_inputs(cls, inputs: PickerInputs) -> Picker:
        """The picker for one micrograph built from ``inputs`` (a picker without parameters
        need not override this)."""
        return cls()

    @classmethod
    def threshold_of(cls, inputs: PickerInputs) -> float | None:
        """The threshold of ``inputs``, or :attr:`default_threshold` when it gives none."""
        return cls.default_threshold if inputs.threshold is None else inputs.threshold

    @abstractmethod
    def prepare(self, image: ArrayLike, pixel_size_a: float) -> PreparedMicrograph:
        """Check the inputs and make the working image."""

    @abstractmethod
    def score_map(self, micrograph: PreparedMicrograph) -> ScoreMap:
        """Score every working pixel."""

    @abstractmethod
    def peaks(self, micrograph: PreparedMicrograph, score: ScoreMap) -> Peaks:
        """Candidate positions: local maxima of the score map (or given positions)."""

    @abstractmethod
    def picks(self, micrograph: PreparedMicrograph, score: ScoreMap, peaks: Peaks, name: str) -> pd.DataFrame:
        """The canonical picks table (``micrograph, x_px, y_px, score, diameter_px`` + extras)."""

    def pick(self, image: ArrayLike, pixel_size_a: float, *, micrograph: str = "micrograph") -> pd.DataFrame:
        """Run the four steps on one micrograph."""
        prepared = self.prepare(image, pixel_size_a)
        score = self.score_map(prepared)
        return self.picks(prepared, score, self.peaks(prepared, score), micrograph)


_REGISTRY: dict[str, type[Picker]] = {}
P = TypeVar("P", bound=type[Picker])


def register_picker(name: str) -> Callable[[P], P]:
    """Class decorator: register a :class:`Picker` subclass under ``name``."""

    def decorate(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"picker {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


#: Modules of the built-in pickers, so that :func:`picker_class` imports only the one asked
#: for (a command then loads neither the template picker's nor the evaluation's dependencies).
_BUILTIN_MODULES = {"blob": "cryoset.picking.blob", "template": "cryoset.picking.template",
                    "import": "cryoset.picking.imported", "features": "cryoset.picking.features"}


def picker_class(name: str) -> type[Picker] | None:
    """The picker registered under ``name`` (None if there is none).

    A built-in picker is found by importing its own module only; any other name falls back
    to :func:`available_pickers` (which imports every module of the package).
    """
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name in _REGISTRY:
        return _REGISTRY[name]
    return available_pickers().get(name)


def available_pickers() -> dict[str, type[Picker]]:
    """Every registered picker by name (imports every module of :mod:`cryoset.picking`)."""
    package = importlib.import_module("cryoset.picking")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"cryoset.picking.{info.name}")
    return dict(_REGISTRY)
