"""The :class:`Schedule` base class, the declaration of a kind's arguments, and the
registry :meth:`Schedule.from_state_dict` rebuilds any kind from."""
import dataclasses

_REGISTRY = {}


def negative_step(s):
    """The error of a step ``s < 0``."""
    return ValueError(f"step s must be >= 0, got {s!r}")


def arg(check, *, default=dataclasses.MISSING, key=None, load=None):
    """Declare one constructor argument of a schedule kind (a dataclass field).

    ``check(name, value)`` validates and normalises the value passed in; ``key`` is the
    argument's name in ``state_dict`` when it differs from the parameter name (saved
    state dicts keep their keys when a parameter is renamed); ``load`` turns the saved
    value back into an argument (e.g. a nested state dict into a schedule).
    """
    return dataclasses.field(default=default, metadata={"check": check, "key": key, "load": load})


def schedule_kind(cls):
    """Class decorator of every schedule kind: its ``arg`` fields become the
    constructor, ``state_dict`` and ``repr``; its name becomes its ``state_dict`` kind.

    Equality stays identity (``eq=False``) so that schedules remain hashable, as
    before they were dataclasses.
    """
    cls = dataclasses.dataclass(eq=False, repr=False)(cls)
    _REGISTRY[cls.__name__] = cls
    return cls


def _plain(value):
    if isinstance(value, Schedule):
        return value.state_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class Schedule:
    """Base class of all learning-rate schedules.

    ``sched(s)`` is the learning rate of optimizer step ``s + 1``, where ``s >= 0``
    is the number of steps already completed.  A kind is a subclass decorated with
    :func:`schedule_kind` that declares its constructor arguments once, as fields
    ``name: type = arg(check, default=...)``, and implements ``_value(s)`` (called
    with ``s >= 0``); ``_prepare()`` runs after the per-argument checks for checks
    across arguments and precomputation.  Mutable state saved in ``state_dict``
    besides the arguments is declared in ``_state_checks`` (name -> check).
    """

    _state_checks = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))
        self._prepare()

    def _prepare(self):
        pass

    def __call__(self, s):
        """The learning rate of step ``s + 1`` (ValueError if ``s < 0``)."""
        if s < 0:
            raise negative_step(s)
        return self._value(s)

    def _value(self, s):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def initial_lr(self):
        """The learning rate at ``s = 0`` (i.e. ``self(0)``)."""
        return self(0)

    # -- configuration / state ------------------------------------------------
    @classmethod
    def _config_keys(cls):
        return tuple(f.metadata["key"] or f.name for f in dataclasses.fields(cls))

    def _config(self):
        """Constructor arguments as a dict of plain Python values, by ``state_dict`` key."""
        return {f.metadata["key"] or f.name: _plain(getattr(self, f.name))
                for f in dataclasses.fields(self)}

    @classmethod
    def _from_config(cls, cfg):
        kwargs = {}
        for f in dataclasses.fields(cls):
            value = cfg[f.metadata["key"] or f.name]
            load = f.metadata["load"]
            kwargs[f.name] = value if load is None else load(value)
        return cls(**kwargs)

    def _get_state(self):
        return {k: getattr(self, k) for k in self._state_checks}

    def _set_state(self, state):
        for k, check in self._state_checks.items():
            setattr(self, k, check(k, state[k]))

    def state_dict(self):
        """Return ``{"kind": class name, **hyper-parameters, **state}`` (plain values)."""
        d = {"kind": type(self).__name__}
        d.update(self._config())
        d.update(self._get_state())
        return d

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state from :meth:`state_dict` output.

        Raises ``ValueError`` if ``state_dict`` is for another schedule class or
        has missing or unexpected keys, and the constructor's errors if a value
        is invalid (the schedule is then left unchanged).
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mine = type(self).__name__
        kind = state_dict.get("kind")
        if kind != mine:
            raise ValueError(
                f"state_dict is for schedule kind {kind!r}, cannot load it into {mine}"
            )
        st_keys = set(self._state_checks)
        expected = {"kind"} | set(self._config_keys()) | st_keys
        got = set(state_dict)
        missing = sorted(expected - got)
        extra = sorted(got - expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if extra:
                parts.append(f"unexpected keys {extra}")
            raise ValueError(f"invalid state_dict for {mine}: " + "; ".join(parts))
        # build aside and swap in, so that an invalid value leaves self untouched
        new = type(self)._from_config(state_dict)
        if st_keys:
            new._set_state(state_dict)
        self.__dict__.clear()
        self.__dict__.update(new.__dict__)

    @staticmethod
    def from_state_dict(state_dict):
        """Build a new schedule of the kind named in ``state_dict["kind"]``."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        kind = state_dict.get("kind")
        cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"state_dict has unknown schedule kind {kind!r}")
        missing = sorted(k for k in cls._config_keys() if k not in state_dict)
        if missing:
            raise ValueError(f"invalid state_dict for {kind}: missing keys {missing}")
        obj = cls._from_config(state_dict)
        obj.load_state_dict(state_dict)  # checks the full key set, restores state
        return obj

    def __repr__(self):
        # written as a call would be: nested schedules positionally, tuples as lists
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            nested = isinstance(value, Schedule) or (
                isinstance(value, tuple) and value and isinstance(value[0], Schedule))
            shown = list(value) if isinstance(value, tuple) else value
            parts.append(repr(shown) if nested else f"{f.name}={shown!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
