"""Saving a state_dict with ``np.savez`` (no pickle): arrays as entries of their own,
everything else as one JSON document."""
import json

import numpy as np

_META = "__fastopt_state__"


def flatten_state_dict(state_dict):
    """``{name: ndarray}`` for ``np.savez(path, **flatten_state_dict(sd))``."""
    arrays = {}

    def walk(node, path):
        if isinstance(node, np.ndarray):
            key = "array:" + "/".join(path)
            arrays[key] = node
            return {"__array__": key}
        if isinstance(node, dict):
            return {"__dict__": [[walk(k, path + ["k"]), walk(v, path + [str(k)])] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            return [walk(v, path + [str(i)]) for i, v in enumerate(node)]
        if isinstance(node, np.generic):
            return node.item()
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot save a {type(node).__name__} at {'/'.join(path)}")

    meta = walk(state_dict, [])
    arrays[_META] = np.array(json.dumps(meta))
    return arrays


def unflatten_state_dict(flat):
    """Inverse of :func:`flatten_state_dict`; takes the dict or an ``np.load`` result."""
    if _META not in flat:
        raise ValueError("not a fastopt state archive (no metadata entry)")
    meta = json.loads(str(flat[_META][()]))

    def build(node):
        if isinstance(node, dict):
            if "__array__" in node:
                return np.array(flat[node["__array__"]])
            return {build(k): build(v) for k, v in node["__dict__"]}
        if isinstance(node, list):
            return [build(v) for v in node]
        return node

    return build(meta)
