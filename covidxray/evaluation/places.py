"""The places holdout leaves out: whole collections, and regions inside one collection.

A collection is a COVID-19 source (covid-chestxray, hannover, covid-chestxray-june). The June
collection gathers case reports from 66 locations, most of 1 to 10 images: too few to score one
alone, so `holdout.regions` groups them into regions by country (a location's last
comma-separated part), and a region left out is the nearest thing to "a hospital the model never
saw" that holds enough images. A blank location belongs to no region: never scored, always
trained on. Leaving a place out takes every image of it, of every class, out of training.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

COVID = "covid"  # the class whose places are left out


@dataclass(frozen=True)
class Place:
    """A collection (countries None) or a region of one: the countries it holds, or for the
    rest region, those it does not (`others`)."""
    name: str
    source: str
    countries: tuple = None
    others: tuple = None

    @property
    def is_region(self):
        return self.countries is not None or self.others is not None

    def holds(self, rows):
        """Which of `rows` (manifest rows, with source and site) are of this place."""
        held = rows["source"] == self.source
        if not self.is_region:
            return held
        country = countries(rows)
        if self.others is not None:
            return held & (country != "") & ~country.isin(self.others)
        return held & country.isin(self.countries)


def sites(rows):
    """Each row's site as text ("" where it has none: a blank cell reads back as NaN)."""
    return rows["site"].fillna("").astype(str).str.strip()


def countries(rows):
    """Each row's country: its site's last comma-separated part ("" where it has none)."""
    return sites(rows).str.rsplit(",", n=1).str[-1].str.strip()


def collections(spec):
    return [Place(source, source) for source in spec.sources]


def regions(spec):
    """holdout.regions as places, the rest region last; [] when it is not given."""
    given = spec.regions
    if given is None:
        return []
    grouped = tuple(c for names in given.groups.values() for c in names)
    return ([Place(name, given.source, tuple(names)) for name, names in given.groups.items()]
            + ([Place(given.rest, given.source, others=grouped)] if given.rest else []))


def trained_regions(rows, left_out, places, count, seed):
    """`rows` with the region collection reduced to `count` regions other than `left_out`,
    drawn in a seeded order: its other regions and its blank locations go, so that the count is
    every place of it that training saw. The other collections stay whole."""
    others = [p for p in places if p.name != left_out.name]
    order = np.random.default_rng(seed).permutation(len(others))
    kept = [others[i] for i in order[:count]]
    in_kept = np.zeros(len(rows), dtype=bool)
    for place in kept:
        in_kept |= place.holds(rows).to_numpy()
    of_collection = (rows["source"] == left_out.source).to_numpy()
    return rows[~of_collection | in_kept]


def region_curve(runs):
    """The learning curve by regions, from {(region, count): [scores]}: per count of training
    regions, the mean over regions and splits of the training sites (training_sites),
    training COVID-19 images, test recall and false alarms."""
    grouped = {}
    for (_, count), results in runs.items():
        grouped.setdefault(count, []).extend(results)
    return [{"regions": count, "train_sites": mean([r["train_sites"] for r in results]),
             "train_covid": mean([r["train_covid"] for r in results]),
             **{key: mean([r["test"][key] for r in results]) for key in ("recall", "false_alarm")}}
            for count, results in sorted(grouped.items())]


def mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def training_sites(train):
    """Distinct places of the training COVID-19 X-rays: each named location of a collection;
    a collection's images that name none count as one place."""
    covid = train[train["class"] == COVID]
    return int(pd.Series(list(zip(covid["source"], sites(covid)))).nunique())
