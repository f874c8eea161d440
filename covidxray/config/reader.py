"""Reading one params.yaml mapping key by key: each read checks its value and names the key, the
allowed values and the value in its error; `done` refuses keys that nothing read, naming the
nearest known one. covidxray/config/params.py builds the typed params with it."""

import difflib
import functools

from covidxray.errors import PipelineError

REQUIRED = object()  # a key without a default: missing is an error


def is_number(value):
    """An int or a float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def defaulted(read):
    """A Section reader that gives `default` (unchecked) for an absent key, if one is given,
    and None for a null value where the default is None (an optional setting left out)."""

    @functools.wraps(read)
    def reader(self, name, *args, default=REQUIRED):
        absent = name not in self.mapping or (default is None and self.mapping[name] is None)
        if default is not REQUIRED and absent:
            self.known.add(name)
            return default
        return read(self, name, *args)

    return reader


class Section:
    """A mapping of params.yaml at `where` (a dotted key; "" for the top level)."""

    def __init__(self, mapping, where=""):
        if not isinstance(mapping, dict):
            raise PipelineError(f"params.yaml: {where or 'the file'} must be a mapping of keys to"
                                f" values, got {mapping!r}")
        self.mapping, self.where, self.known = mapping, where, set()

    def key(self, name):
        return f"{self.where}.{name}" if self.where else str(name)

    def fail(self, name, expected, value):
        raise PipelineError(f"params.yaml: {self.key(name)} must be {expected}, got {value!r}")

    def raw(self, name, default=REQUIRED):
        self.known.add(name)
        if name in self.mapping:
            return self.mapping[name]
        if default is REQUIRED:
            unread = [str(key) for key in self.mapping if key not in self.known]
            near = difflib.get_close_matches(str(name), unread, n=1)
            hint = f" (is {self.key(near[0])} a misspelling of it?)" if near else ""
            raise PipelineError(f"params.yaml: {self.key(name)} is missing{hint}")
        return default

    @defaulted
    def whole(self, name, minimum):
        value = self.raw(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.fail(name, f"a whole number >= {minimum}", value)
        return value

    @defaulted
    def number(self, name, ok=lambda v: v > 0, allowed="> 0"):
        """A float for which ok(value) holds; `allowed` says which, as "in [0, 1)"."""
        value = self.raw(name)
        if not is_number(value) or not ok(value):
            self.fail(name, f"a number {allowed}", value)
        return float(value)

    @defaulted
    def flag(self, name):
        value = self.raw(name)
        if not isinstance(value, bool):
            self.fail(name, "true or false", value)
        return value

    @defaulted
    def choice(self, name, choices):
        value = self.raw(name)
        if value not in choices:
            self.fail(name, f"one of {', '.join(choices)}", value)
        return value

    @defaulted
    def text(self, name):
        value = self.raw(name)
        if not isinstance(value, str) or not value:
            self.fail(name, "a non-empty text", value)
        return value

    @defaulted
    def names(self, name, allowed=None):
        """A non-empty list of texts (of `allowed`, when given) as a tuple."""
        value = self.raw(name)
        if (not isinstance(value, list) or not value
                or any(not isinstance(v, str) or (allowed and v not in allowed) for v in value)):
            self.fail(name, f"a list of {', '.join(allowed) if allowed else 'texts'}", value)
        return tuple(value)

    def counts(self, name, classes):
        """A mapping of classes to whole numbers >= 0."""
        counts = self.section(name)
        return {cls: counts.whole(cls, 0) for cls in self.keys_of(counts, classes)}

    def labels(self, name, classes):
        """A mapping of upstream labels to classes."""
        value = self.raw(name)
        if (not isinstance(value, dict) or not value
                or any(not isinstance(c, str) or c not in classes for c in value.values())):
            self.fail(name, f"a mapping of labels to classes ({', '.join(classes)})", value)
        return dict(value)

    def span(self, name):
        """A [low, high] pair of whole numbers, low <= high."""
        value = self.raw(name)
        if (not isinstance(value, list) or len(value) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
                or value[0] > value[1]):
            self.fail(name, "[low, high], two whole numbers", value)
        return tuple(value)

    def section(self, name, default=REQUIRED):
        value = self.raw(name, default)
        return None if value is None else Section(value, self.key(name))

    def read(self, name, build, *args, default=REQUIRED):
        """build(section, *args) of the mapping at `name`, its keys then checked (done); None
        when it is absent and default is None."""
        section = self.section(name, default)
        return None if section is None else section.built(build, *args)

    def built(self, build, *args):
        value = build(self, *args)
        self.done()
        return value

    def keys_of(self, section, allowed):
        """The keys of a mapping whose keys are names from `allowed` (classes, say)."""
        unknown = [k for k in section.mapping if k not in allowed]
        if unknown:
            raise PipelineError(f"params.yaml: {section.key(unknown[0])} is not one of"
                                f" {', '.join(allowed)}")
        return list(section.mapping)

    def done(self):
        """Refuse keys that nothing read: a misspelt key would otherwise be silently ignored."""
        for key in self.mapping:
            if key not in self.known:
                near = difflib.get_close_matches(str(key), sorted(map(str, self.known)), n=1)
                hint = f"; did you mean {self.key(near[0])}?" if near else (
                    f"; known: {', '.join(sorted(map(str, self.known)))}")
                raise PipelineError(f"params.yaml: {self.key(key)} is not a known key{hint}")
