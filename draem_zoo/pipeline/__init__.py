"""One category end to end, as ``draem-zoo train`` and every search trial run it: the run config
(one dataclass per concern, bundled) and the workflow data -> textures -> model -> train ->
select on validation -> test metrics -> model directory.

Hands the search and the paper reproduction :func:`~.workflow.train_category` and :class:`~.runconfig.RunConfig`."""

from .runconfig import RunConfig, make_run_config
from .workflow import Distributed, train_category

__all__ = ["Distributed", "RunConfig", "make_run_config", "train_category"]
