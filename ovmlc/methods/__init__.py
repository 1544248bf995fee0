"""One folder per method (peft-style): `__init__.py` (builds the `MethodSpec` and calls `register_method`),
`configuration_<m>.py` and `modeling_<m>.py` (flat imports only: they are exported as Hub remote code).

Importing this package imports every method subpackage, which is what registers them (`ovmlc.core.registry`).
"""

from . import (  # noqa: F401 - registration order = `ovmlc.METHODS` order
    clip_zeroshot,
    clipft,
    coop,
    dualcoop,
    dualcooppp,
    lamm,
    linear_probe,
    mkt,
    qks,
    vild,
)
