"""The data-source sections of params.yaml as frozen dataclasses: the upstream layouts, the rows
each keeps (Filter), `merge`'s training sources and the `external` sets. Read and checked as
covidxray/config/schema.py reads the other sections; sources.py reads the folders they name."""

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from covidxray.config.schema import CLASSES, SOURCES
from covidxray.errors import PipelineError

AGE_GROUPS = ("adult", "child", "unknown")
# the keys of each layout beside `layout` and `path`; `sources` stands for `source`, or for
# `sources` where a table has a source column
LAYOUT_KEYS = {"covid": ("modality", "views", "findings", "sources"), "kaggle": ("splits",),
               "nih": ("findings", "ages", "views"), "hannover": ("views",),
               "folders": ("findings", "patient", "age_group", "sources"),
               "table": ("columns", "images", "findings", "age_group", "sources")}
# the layouts of merge.sources' sets: your own data, or another ieee8023 snapshot
TRAINING = ("folders", "table", "covid")
COLLECTION = "covid-chestxray"  # the covid layout's source unless a set names its own
# sampled after the tutorial's sources, each by merge.<source>.per_class, in this order: a source
# added here comes last, so the rows before it and the draws that made them stay as they were
SEPARATE = ("nih", "hannover")
# metrics/detail/data.json's own keys, beside one per source sampled apart (stages/merge.py)
DATA_REPORT_KEYS = ("classes", "sources", "total", "patients", "n_skipped", "n_duplicates",
                    "skipped", "duplicates")
ROLES = ("path", "label", "patient")  # table.columns: required; `source` and `age` optional


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
        """The keys of a layout (LAYOUT_KEYS); `name` is the default source."""
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
    return replace(Filter.read(s, ("modality", "views")), findings={s.text("finding"): "covid"},
                   sources=(COLLECTION,))


@dataclass(frozen=True)
class Merge:
    kermany_splits: tuple
    covid: Filter
    per_class: dict
    nih: Filter = None  # None: the source is left out
    hannover: Filter = None
    sources: dict = field(default_factory=dict)  # name -> ExternalSet of a TRAINING layout

    @classmethod
    def read(cls, s):
        merge = cls(kermany_splits=s.names("kermany_splits"), covid=s.read("covid", covid_filter),
                    per_class=s.counts("per_class", CLASSES),
                    nih=s.read("nih", Filter.read, LAYOUT_KEYS["nih"], True, default=None),
                    hannover=s.read("hannover", Filter.read, ("views",), True, default=None))
        read = {"kermany": "merge.kermany_splits", "covid-chestxray": "merge.covid",
                **{name: f"merge.{name}" for name in SEPARATE if getattr(merge, name)}}
        return replace(merge, sources=s.read("sources", training_sets, read, default=None) or {})

    def sampled_apart(self):
        """name -> (its source values, per_class) of each source sampled after the tutorial's,
        in order: SEPARATE's, then merge.sources' (one named as one of SEPARATE in its place)."""
        order = {name: ((name,), getattr(self, name).per_class if getattr(self, name) else {})
                 for name in SEPARATE}
        order.update({name: (spec.filter.sources, spec.filter.per_class)
                      for name, spec in self.sources.items()})
        return order

    def drawn_classes(self, source):
        """The classes merge's per_class counts ask of `source` (the tutorial's two sources are
        drawn from together, so each may give any of merge.per_class's)."""
        counts = {"kermany": self.per_class, COLLECTION: self.per_class}
        for sources, per_class in self.sampled_apart().values():
            counts.update(dict.fromkeys(sources, per_class))
        return {cls for cls, count in counts.get(source, {}).items() if count}

    @property
    def manifest_sources(self):
        """The source values the manifest may hold: SOURCES, then those merge.sources adds."""
        return tuple(dict.fromkeys((*SOURCES, *(source for spec in self.sources.values()
                                                for source in spec.filter.sources))))


def training_sets(s, read):
    """merge.sources: name -> a set of a TRAINING layout with its per_class. Its name and sources
    must be new to `read` (source -> the key that reads it), which each set then extends: rows of
    one source from two places would be sampled and reported twice."""
    sets = {}
    for name in list(s.mapping):
        if name in DATA_REPORT_KEYS:  # its counts there would overwrite, or be overwritten
            raise PipelineError(f"params.yaml: {s.key(name)}: {name!r} is a key of"
                                " metrics/detail/data.json's own; give the set another name")
        sets[name] = s.read(name, ExternalSet.read, name, TRAINING, True)
        for source in dict.fromkeys((name, *sets[name].filter.sources)):
            if source in read:
                raise PipelineError(f"params.yaml: {s.key(name)} names source {source!r}, which"
                                    f" {read[source]} already reads; rename it (or set its"
                                    " `source`), or leave one of them out")
            read[source] = s.key(name)
    return sets


@dataclass(frozen=True)
class ExternalSet:
    """A folder in one of the layouts: an external set, or a training source (merge.sources)."""
    name: str
    layout: str
    path: Path
    filter: Filter

    @classmethod
    def read(cls, s, name, layouts=tuple(LAYOUT_KEYS), per_class=False):
        """An external set, or (TRAINING layouts, per_class) a set of merge.sources. The
        source of its rows: `source`, else the set's name (the covid layout's: COLLECTION)."""
        layout = s.choice("layout", layouts)
        default = COLLECTION if layout == "covid" else name
        return cls(name=name, layout=layout, path=Path(s.text("path")),
                   filter=Filter.read(s, LAYOUT_KEYS[layout], per_class, default))
