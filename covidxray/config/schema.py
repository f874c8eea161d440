"""The sections of params.yaml as frozen dataclasses, each read and checked from its mapping
(checks.Section) by its `read`. What each key means is said once, in params.yaml's comments."""

from dataclasses import dataclass

from covidxray.config.reader import REQUIRED, is_number

CLASSES = ("normal", "bacterial", "viral", "covid", "pneumonia_other")  # the last: NIH, untyped
SOURCES = ("kermany", "covid-chestxray", "nih", "hannover")  # built in; merge.sources adds more
MIN_SIZE = 32  # image_size: pixels a side that VGG16's five 2x2 poolings need
VGG16_BLOCKS = 5
POOLINGS = ("flatten", "average", "average_max")
CLASS_WEIGHTS = ("none", "balanced", "balanced_by_source")
SOLVERS = ("auto", "lbfgs", "adam")  # head.solver: how the head is fitted (model/solver.py)
FILL_MODES = ("constant", "nearest", "reflect", "wrap")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
FEATURE_DTYPES = ("float32", "float16")  # features.dtype: float16 halves their disk and memory
DISTRIBUTIONS = ("auto", "none", "data_parallel")


@dataclass(frozen=True)
class Preprocess:
    crop: float = 0.0
    clahe: float = 0.0

    @classmethod
    def read(cls, s):
        return cls(crop=s.number("crop", lambda v: 0 <= v < 0.5, "in [0, 0.5)", default=0.0),
                   clahe=s.number("clahe", lambda v: 0 <= v < 1, "in [0, 1)", default=0.0))


@dataclass(frozen=True)
class Split:
    test_per_class: int
    val_fraction: float
    separately: tuple = ()
    own_test: dict = None  # test_per_class_by_source: a source of `separately` -> its own count

    @classmethod
    def read(cls, s, sources=SOURCES):
        separately = s.names("separately", sources) if s.raw("separately", []) else ()
        own = s.read("test_per_class_by_source", lambda m: {
            source: m.whole(source, 1) for source in m.keys_of(m, separately)}, default=None)
        return cls(test_per_class=s.whole("test_per_class", 1),
                   val_fraction=s.number("val_fraction", lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
                   separately=separately, own_test=own or {})

    def test_images(self, source=None):
        """Test images a class of a source (None: of those not split separately)."""
        return (self.own_test or {}).get(source, self.test_per_class)


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
class Features:
    views: int
    plain_view: bool
    batch_size: object  # images per forward pass, or "auto": measured on this machine
    dtype: str = "float32"

    @classmethod
    def read(cls, s):
        return cls(views=s.whole("views", 0), plain_view=s.flag("plain_view"),
                   batch_size="auto" if s.raw("batch_size") == "auto" else s.whole("batch_size", 1),
                   dtype=s.choice("dtype", FEATURE_DTYPES, default="float32"))

    @property
    def stored(self):
        """Whether the features stage stores a bank, which the head then trains on."""
        return bool(self.views or self.plain_view)


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
    regions: "Regions" = None  # None: no region of a collection is left out

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
                   targets=s.read("targets", targets),
                   regions=s.read("regions", Regions.read, sources, default=None))


@dataclass(frozen=True)
class Regions:
    """holdout.regions: one collection's locations grouped into regions by their country."""
    source: str
    groups: dict  # region -> its countries (a location's last comma-separated part)
    rest: str = None  # the region of every other named country; None: those are never left out
    curve: bool = True  # the learning curve by regions (regions x regions more models a split)

    @classmethod
    def read(cls, s, sources=SOURCES):
        groups = s.read("groups", lambda g: {name: g.names(name) for name in list(g.mapping)})
        countries = [country for names in groups.values() for country in names]
        if twice := sorted({c for c in countries if countries.count(c) > 1}):
            s.fail("groups", f"regions of distinct countries ({twice[0]} is in two)", groups)
        if not groups:
            s.fail("groups", "a mapping of regions to their countries", groups)
        rest = s.text("rest", default=None)
        if rest in groups:
            s.fail("rest", "a region name other than those of `groups`", rest)
        return cls(source=s.choice("source", sources), groups=groups, rest=rest,
                   curve=s.flag("curve", default=True))


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
