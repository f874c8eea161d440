"""The sections of params.yaml as frozen dataclasses, each read and checked from its mapping
(checks.Section) by its `read`. What each key means is said once, in params.yaml's comments."""

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from covidxray.checks import REQUIRED, is_number
from covidxray.cli import PipelineError

CLASSES = ("normal", "bacterial", "viral", "covid", "pneumonia_other")  # the last: NIH, untyped
SOURCES = ("kermany", "covid-chestxray", "nih", "hannover")  # built in; merge.sources adds more
MIN_SIZE = 32  # image_size: pixels a side that VGG16's five 2x2 poolings need
VGG16_BLOCKS = 5
POOLINGS = ("flatten", "average", "average_max")
CLASS_WEIGHTS = ("none", "balanced", "balanced_by_source")
SOLVERS = ("auto", "lbfgs", "adam")  # head.solver: how the head is fitted (covidxray/solver.py)
FILL_MODES = ("constant", "nearest", "reflect", "wrap")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
BANK_DTYPES = ("float32", "float16")  # bank.dtype: float16 halves the features' disk and memory
DISTRIBUTIONS = ("auto", "none", "data_parallel")
AGE_GROUPS = ("adult", "child", "unknown")
# the keys of each layout beside `layout` and `path`; `sources` stands for `source`, or for
# `sources` where a table has a source column
LAYOUT_KEYS = {"covid": ("modality", "views", "findings"), "kaggle": ("splits",),
               "nih": ("findings", "ages", "views"), "hannover": ("views",),
               "folders": ("findings", "patient", "age_group", "sources"),
               "table": ("columns", "images", "findings", "age_group", "sources")}
GENERIC = ("folders", "table")  # the layouts of your own data, also training sources
# metrics/detail/data.json's own keys, beside one per source sampled apart (stages/merge.py)
DATA_REPORT_KEYS = ("classes", "sources", "total", "patients", "n_skipped", "n_duplicates",
                    "skipped", "duplicates")
ROLES = ("path", "label", "patient")  # table.columns: required; `source` and `age` optional


@dataclass(frozen=True)
class Preprocess:
    crop: float = 0.0
    clahe: float = 0.0

    @classmethod
    def read(cls, s):
        return cls(crop=s.number("crop", lambda v: 0 <= v < 0.5, "in [0, 0.5)", default=0.0),
                   clahe=s.number("clahe", lambda v: 0 <= v < 1, "in [0, 1)", default=0.0))


@dataclass(frozen=True)
class Filter:
    """Which rows of an upstream layout are candidates (merge's sources, external sets)."""
    views: tuple = ()
    findings: dict = field(default_factory=dict)  # upstream label -> class
    ages: tuple = None  # (low, high) years, inclusive
    modality: str = None
    splits: tuple = ()  # the Kaggle layout's split folders
    per_class: dict = field(default_factory=dict)  # merge: images sampled per class
    patient: re.Pattern = None  # folders: its one group in a file name is the patient id
    columns: dict = field(default_factory=dict)  # table: role (ROLES, source, age) -> column
    images: Path = None  # table: the folder its paths are relative to; None: the table's
    age_group: str = None  # folders, table without an age column: every row's
    sources: tuple = ()  # folders, table: the manifest's source values of its rows

    @classmethod
    def read(cls, s, keys, per_class=False, name=None):
        """The keys of a layout (LAYOUT_KEYS); `name`, the set's, is the generic layouts'
        default source."""
        read = {"views": lambda: s.names("views"), "splits": lambda: s.names("splits"),
                # text keys: a CSV's label or a folder's name is text, whatever YAML made of it
                "findings": lambda: {str(k): v for k, v in s.labels("findings", CLASSES).items()},
                "ages": lambda: s.span("ages"), "modality": lambda: s.text("modality"),
                "patient": lambda: patient_pattern(s),
                "columns": lambda: s.read("columns", table_columns),
                "images": lambda: None if s.raw("images", None) is None else Path(
                    s.text("images")),
                "age_group": lambda: None if "age" in got.get("columns", {}) else s.choice(
                    "age_group", AGE_GROUPS, default="unknown"),
                "sources": lambda: s.names("sources") if "source" in got.get("columns", {})
                else (s.text("source", default=name),)}
        got = {}
        for key in keys:  # in order: columns decides what age_group and sources read
            got[key] = read[key]()
        return cls(**got, per_class=s.counts("per_class", CLASSES) if per_class else {})


def patient_pattern(s):
    """folders.patient: a regular expression with exactly one group, or None."""
    text = s.text("patient", default=None)
    if text is None:
        return None
    try:
        pattern = re.compile(text)
    except re.error as err:
        s.fail("patient", f"a regular expression ({err})", text)
    if pattern.groups != 1:
        s.fail("patient", "a regular expression with exactly one group, the patient id"
               r" (e.g. '^(\w+?)_')", text)
    return pattern


def table_columns(s):
    """table.columns: the CSV's column of each role."""
    optional = {role: s.text(role, default=None) for role in ("source", "age")}
    return {**{role: s.text(role) for role in ROLES},
            **{role: column for role, column in optional.items() if column}}


def covid_filter(s):
    """merge.covid: metadata.csv rows of one finding, which become the covid class."""
    return replace(Filter.read(s, ("modality", "views")), findings={s.text("finding"): "covid"})


@dataclass(frozen=True)
class Merge:
    kermany_splits: tuple
    covid: Filter
    per_class: dict
    nih: Filter = None  # None: the source is left out
    hannover: Filter = None
    sources: dict = field(default_factory=dict)  # name -> ExternalSet of a GENERIC layout

    @classmethod
    def read(cls, s):
        merge = cls(kermany_splits=s.names("kermany_splits"), covid=s.read("covid", covid_filter),
                    per_class=s.counts("per_class", CLASSES),
                    nih=s.read("nih", Filter.read, LAYOUT_KEYS["nih"], True, default=None),
                    hannover=s.read("hannover", Filter.read, ("views",), True, default=None))
        read = {"kermany": "merge.kermany_splits", "covid-chestxray": "merge.covid",
                **{name: f"merge.{name}" for name in ("nih", "hannover") if getattr(merge, name)}}
        return replace(merge, sources=s.read("sources", training_sets, read, default=None) or {})

    @property
    def manifest_sources(self):
        """The source values the manifest may hold: SOURCES, then those merge.sources adds."""
        return tuple(dict.fromkeys((*SOURCES, *(source for spec in self.sources.values()
                                                for source in spec.filter.sources))))


def training_sets(s, read):
    """merge.sources: name -> a set of a generic layout with its per_class. Its name and sources
    must be new to `read` (source -> the key that reads it), which each set then extends: rows of
    one source from two places would be sampled and reported twice."""
    sets = {}
    for name in list(s.mapping):
        if name in DATA_REPORT_KEYS:  # its counts there would overwrite, or be overwritten
            raise PipelineError(f"params.yaml: {s.key(name)}: {name!r} is a key of"
                                " metrics/detail/data.json's own; give the set another name")
        sets[name] = s.read(name, ExternalSet.read, name, GENERIC, True)
        for source in dict.fromkeys((name, *sets[name].filter.sources)):
            if source in read:
                raise PipelineError(f"params.yaml: {s.key(name)} names source {source!r}, which"
                                    f" {read[source]} already reads; rename it (or set its"
                                    " `source`), or leave one of them out")
            read[source] = s.key(name)
    return sets


@dataclass(frozen=True)
class Split:
    test_per_class: int
    val_fraction: float
    separately: tuple = ()

    @classmethod
    def read(cls, s, sources=SOURCES):
        return cls(test_per_class=s.whole("test_per_class", 1),
                   val_fraction=s.number("val_fraction", lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
                   separately=s.names("separately", sources) if s.raw("separately", [])
                   else ())


@dataclass(frozen=True)
class Augment:
    rotation_degrees: float
    shift: float
    shear_degrees: float
    zoom: float
    channel_shift: float
    horizontal_flip: bool
    vertical_flip: bool
    fill_mode: str

    @classmethod
    def read(cls, s):
        def share(name):
            return s.number(name, lambda v: 0 <= v < 1, "in [0, 1)")

        return cls(rotation_degrees=s.number("rotation_degrees", lambda v: 0 <= v <= 180,
                                             "in [0, 180]"),
                   shift=share("shift"), zoom=share("zoom"),
                   shear_degrees=s.number("shear_degrees", lambda v: 0 <= v < 90, "in [0, 90)"),
                   channel_shift=s.number("channel_shift", lambda v: 0 <= v <= 255,
                                          "in [0, 255]"),
                   horizontal_flip=s.flag("horizontal_flip"),
                   vertical_flip=s.flag("vertical_flip"),
                   fill_mode=s.choice("fill_mode", FILL_MODES))


@dataclass(frozen=True)
class Head:
    pooling: str
    normalize: bool
    variance_floor: float
    units: int
    dropout: float
    l2: float
    class_weight: str
    restore_best: bool
    solver: str = "adam"

    @classmethod
    def read(cls, s, base=None):
        """The `head` section, or a task's `head` keys over `base`, the checked `head`."""
        given = {key: REQUIRED if base is None else getattr(base, key)
                 for key in cls.__dataclass_fields__}
        at_least_0 = (lambda v: v >= 0, ">= 0")
        return cls(pooling=s.choice("pooling", POOLINGS, default=given["pooling"]),
                   normalize=s.flag("normalize", default=given["normalize"]),
                   variance_floor=s.number("variance_floor", *at_least_0,
                                           default=given["variance_floor"]),
                   units=s.whole("units", 0, default=given["units"]),
                   dropout=s.number("dropout", lambda v: 0 <= v < 1, "in [0, 1)",
                                    default=given["dropout"]),
                   l2=s.number("l2", *at_least_0, default=given["l2"]),
                   class_weight=s.choice("class_weight", CLASS_WEIGHTS,
                                         default=given["class_weight"]),
                   restore_best=s.flag("restore_best", default=given["restore_best"]),
                   solver=s.choice("solver", SOLVERS,
                                   default="auto" if base is None else base.solver))

    def layers(self):
        """build_head's arguments."""
        return {"pooling": self.pooling, "normalize": self.normalize, "units": self.units,
                "dropout": self.dropout, "l2": self.l2}


@dataclass(frozen=True)
class Backbone:
    weights: str  # imagenet, hed, none or a file path
    precision: str
    feature_block: int = VGG16_BLOCKS
    trainable_blocks: int = 0
    fine_tune_lr: float = None  # set when trainable_blocks > 0
    fine_tune_epochs: int = None

    @classmethod
    def read(cls, s):
        top = s.raw("feature_block", VGG16_BLOCKS)
        if top not in range(1, VGG16_BLOCKS + 1) or isinstance(top, bool):
            s.fail("feature_block", f"1 to {VGG16_BLOCKS}", top)
        blocks = s.raw("trainable_blocks", 0)
        if blocks not in range(top) or isinstance(blocks, bool):
            s.fail("trainable_blocks", f"0 (frozen) to {top - 1} (below backbone.feature_block)",
                   blocks)
        tune = {"fine_tune_lr": s.number("fine_tune_lr", default=None if not blocks else REQUIRED),
                "fine_tune_epochs": s.whole("fine_tune_epochs", 1,
                                            default=None if not blocks else REQUIRED)}
        return cls(weights=s.text("weights"), precision=s.choice("precision", PRECISIONS),
                   feature_block=top, trainable_blocks=blocks, **tune)


@dataclass(frozen=True)
class Bank:
    views: int
    plain_view: bool
    batch_size: object  # images per forward pass, or "auto": measured on this machine
    dtype: str = "float32"

    @classmethod
    def read(cls, s):
        return cls(views=s.whole("views", 0), plain_view=s.flag("plain_view"),
                   batch_size="auto" if s.raw("batch_size") == "auto" else s.whole("batch_size", 1),
                   dtype=s.choice("dtype", BANK_DTYPES, default="float32"))

    @property
    def stored(self):
        """Whether the features stage stores a bank, which the head then trains on."""
        return bool(self.views or self.plain_view)


@dataclass(frozen=True)
class ExternalSet:
    """A folder in one of the layouts: an external set, or a training source (merge.sources)."""
    name: str
    layout: str
    path: Path
    filter: Filter

    @classmethod
    def read(cls, s, name, layouts=tuple(LAYOUT_KEYS), per_class=False):
        """An external set, or (GENERIC layouts, per_class) a set of merge.sources."""
        layout = s.choice("layout", layouts)
        return cls(name=name, layout=layout, path=Path(s.text("path")),
                   filter=Filter.read(s, LAYOUT_KEYS[layout], per_class, name))


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple
    sources: tuple
    epochs: int
    lr: float
    batch_size: int
    head: Head

    @classmethod
    def read(cls, s, name, head, sources=SOURCES):
        classes = s.names("classes", CLASSES)
        if len(set(classes)) < 2:
            s.fail("classes", f"at least two of {', '.join(CLASSES)}", list(classes))
        return cls(name=name, classes=classes, sources=s.names("sources", sources),
                   epochs=s.whole("epochs", 1), lr=s.number("lr"),
                   batch_size=s.whole("batch_size", 1),
                   head=s.read("head", Head.read, head, default=None) or head)


@dataclass(frozen=True)
class Controls:
    task: str
    margin: float  # the lung field: the image less this share of each side
    children: str = None  # an external set of children
    folds: int = 5

    @classmethod
    def read(cls, s):
        return cls(task=s.text("task"),
                   margin=s.number("margin", lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
                   children=s.text("children", default=None), folds=s.whole("folds", 2))


@dataclass(frozen=True)
class Targets:
    recall: float
    false_alarm: float
    within_source_auc: float


@dataclass(frozen=True)
class Holdout:
    task: str
    sources: tuple
    splits: int
    fractions: tuple  # sorted, holding 1
    within_source: str
    targets: Targets

    @classmethod
    def read(cls, s, sources=SOURCES):
        fractions = s.raw("fractions")
        if not isinstance(fractions, list) or 1 not in fractions:
            s.fail("fractions", "a list holding 1 (the whole leave-one-out run)", fractions)
        for f in fractions:
            if not is_share(f) or f == 0:
                s.fail("fractions", "a list of numbers in (0, 1]", fractions)
        return cls(task=s.text("task"), sources=s.names("sources", sources),
                   splits=s.whole("splits", 1), fractions=tuple(sorted(map(float, fractions))),
                   within_source=s.text("within_source", default=None),
                   targets=s.read("targets", targets))


def is_share(value):
    return is_number(value) and 0 <= value <= 1


def targets(s):
    def share(name):
        return s.number(name, lambda v: 0 <= v <= 1, "in [0, 1]")

    return Targets(recall=share("recall"), false_alarm=share("false_alarm"),
                   within_source_auc=share("within_source_auc"))


@dataclass(frozen=True)
class Confound:
    other_source: str = None  # an external set with no COVID-19 and no Kermany images
    folds: int = 5

    @classmethod
    def read(cls, s):
        return cls(other_source=s.text("other_source", default=None), folds=s.whole("folds", 2))


@dataclass(frozen=True)
class Ood:
    neighbours: int  # k: the distance to the k-th nearest training image
    keep: float  # the share of validation images under the threshold
    grid: int  # the feature map averaged over grid x grid cells

    @classmethod
    def read(cls, s):
        return cls(neighbours=s.whole("neighbours", 1),
                   keep=s.number("keep", lambda v: 0 < v <= 1, "in (0, 1]"),
                   grid=s.whole("grid", 1))
