"""params.yaml, read once into frozen dataclasses (covidxray/config/schema.py), one per section:
every value is checked when the file is read, and stages and library take these typed values, never
the raw dicts. Keys that name other keys (a task, an external set) are checked against them here."""

from dataclasses import dataclass
from pathlib import Path

import yaml

from covidxray.config.layouts import ExternalSet, Merge
from covidxray.config.reader import Section
from covidxray.config.schema import (MIN_SIZE, Augment, Backbone, Features, Confound, Controls,
                                     DISTRIBUTIONS, Head, Holdout, Ood, Preprocess, Split, Task)
from covidxray.errors import PipelineError
from covidxray.paths import PARAMS_FILE

@dataclass(frozen=True)
class Recipe:
    """Every param that decides how one task's model trains."""
    task: Task
    backbone: Backbone
    features: Features
    augment: Augment
    seed: int
    shard_size: int

    @property
    def head(self):
        return self.task.head

    @property
    def solver(self):
        """How the head is fitted: lbfgs (the linear head's optimum, covidxray/model/solver.py) or
        adam (Keras fit for the task's epochs); auto is lbfgs wherever it applies."""
        if self.head.solver != "auto":
            return self.head.solver
        return "lbfgs" if lbfgs_fits(self.head, self.backbone, self.features) is None else "adam"


def lbfgs_fits(head, backbone, features):
    """None where the lbfgs solver can fit the head, else why not."""
    if head.units:
        return "head.units > 0 (a hidden layer is not a convex problem)"
    if backbone.trainable_blocks:
        return "backbone.trainable_blocks > 0 (fine-tuning trains the blocks by epochs)"
    if not features.stored:
        return "no bank (per-epoch augmentation runs VGG16 every epoch)"
    return None


@dataclass(frozen=True)
class Params:
    seed: int
    image_size: int
    shard_size: int
    preprocess: Preprocess
    merge: Merge
    split: Split
    augment: Augment
    head: Head
    backbone: Backbone
    features: Features
    distribution: str
    repeat_splits: int
    external: dict  # name -> ExternalSet
    controls: Controls
    holdout: Holdout
    confound: Confound
    ood: Ood
    tasks: dict  # name -> Task

    def task(self, name, key=None):
        """Task `name`, which params key `key` names (None: a stage's command line)."""
        if name not in self.tasks:
            named = f"{key} names unknown task" if key else "unknown task"
            raise PipelineError(f"params.yaml: {named} {name!r} (tasks:"
                                f" {', '.join(self.tasks)})")
        return self.tasks[name]

    def recipe(self, name):
        return Recipe(self.task(name), self.backbone, self.features, self.augment, self.seed,
                      self.shard_size)

    def external_set(self, name, key):
        """External set `name`, which params key `key` names."""
        if name not in self.external:
            raise PipelineError(f"params.yaml: {key} names {name!r}, which is not a set under"
                                " `external`")
        return self.external[name]


def augment(s):
    """`augment`: a preset of augment_presets (each checked), or the settings themselves."""
    presets = s.read("augment_presets", lambda p: {name: p.read(name, Augment.read)
                                                   for name in list(p.mapping)}, default={})
    chosen = s.raw("augment")
    if isinstance(chosen, str):
        if chosen not in presets:
            s.fail("augment", f"a preset of augment_presets ({', '.join(presets)})", chosen)
        return presets[chosen]
    return s.read("augment", Augment.read)


def tasks(s, head, sources):
    if not s.mapping:
        raise PipelineError("params.yaml: tasks must name at least one task")
    return {name: s.read(name, Task.read, name, head, sources) for name in list(s.mapping)}


def params(s):
    """Every section; merge first: the sources it reads are those the keys naming sources
    (split.separately, tasks.<task>.sources, holdout.sources) may name."""
    head, merge = s.read("head", Head.read), s.read("merge", Merge.read)
    sources = merge.manifest_sources
    return Params(
        seed=s.whole("seed", 0), image_size=s.whole("image_size", MIN_SIZE),
        shard_size=s.whole("shard_size", 1, default=1024),
        preprocess=s.read("preprocess", Preprocess.read, default={}) or Preprocess(),
        merge=merge, split=s.read("split", Split.read, sources), augment=augment(s),
        head=head, backbone=s.read("backbone", Backbone.read),
        features=s.read("features", Features.read),
        distribution=s.choice("distribution", DISTRIBUTIONS, default="auto"),
        repeat_splits=s.read("repeat", lambda r: r.whole("splits", 1)),
        external=s.read("external", lambda e: {name: e.read(name, ExternalSet.read, name)
                                               for name in list(e.mapping)}, default={}) or {},
        controls=s.read("controls", Controls.read),
        holdout=s.read("holdout", Holdout.read, sources),
        confound=s.read("confound", Confound.read), ood=s.read("ood", Ood.read),
        tasks=s.read("tasks", tasks, head, sources))


def load_params(path=PARAMS_FILE):
    """params.yaml, every value checked, as Params; then the keys that name other keys (a task,
    an external set, the bank that fine-tuning needs) are checked against them."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"{path}: cannot read params ({err})") from err
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: cannot read params (not a mapping of keys to values)")
    return cross_checked(Section(raw).built(params))


def cross_checked(params):
    """Params whose keys that name tasks and external sets name ones that exist."""
    params.task(params.controls.task, "controls.task")
    holdout = params.task(params.holdout.task, "holdout.task")
    if "covid" not in holdout.classes:
        raise PipelineError(f"params.yaml: holdout.task {holdout.name!r} has no covid class")
    if any(source not in holdout.sources for source in params.holdout.sources):
        raise PipelineError(f"params.yaml: holdout.sources must list sources of task"
                            f" {holdout.name} ({', '.join(holdout.sources)}),"
                            f" got {list(params.holdout.sources)!r}")
    regions = params.holdout.regions
    if regions and regions.source not in params.holdout.sources:
        raise PipelineError(f"params.yaml: holdout.regions.source {regions.source!r} must be one"
                            f" of holdout.sources ({', '.join(params.holdout.sources)}): a"
                            " collection left out whole, then by regions")
    for key, name in (("controls.children", params.controls.children),
                      ("confound.other_source", params.confound.other_source),
                      ("holdout.within_source", params.holdout.within_source)):
        if name is not None:
            params.external_set(name, key)
    for name, task in params.tasks.items():
        drawn = set().union(*(params.merge.drawn_classes(source) for source in task.sources))
        if absent := [cls for cls in task.classes if cls not in drawn]:
            raise PipelineError(f"params.yaml: tasks.{name}.classes: merge draws no image of"
                                f" {', '.join(absent)} from tasks.{name}.sources"
                                f" ({', '.join(task.sources)}) by its per_class counts; add a"
                                " source that has them, or their counts")
        why = lbfgs_fits(task.head, params.backbone, params.features)
        if task.head.solver == "lbfgs" and why:
            raise PipelineError(f"params.yaml: head.solver lbfgs (task {name}) fits a linear head"
                                f" on the bank, not with {why}; use solver adam or auto")
    if params.backbone.trainable_blocks and not params.features.stored:
        raise PipelineError("params.yaml: backbone.trainable_blocks > 0 needs the bank"
                            " (features.views > 0 or features.plain_view)")
    return params
