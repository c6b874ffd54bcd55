"""fleet's deploy files, rendered from the pool specs (fleet/pools.py) and the values (values.py).

As a Helm chart derives everything from its ``values.yaml``, every file under ``deploy/supervisor``,
``deploy/k8s`` and ``deploy/prometheus`` (and the README's pool table) is made here from
:data:`fleet.pools.POOLS` and :data:`fleet.deploy.values.VALUES`: one module per target. The
rendered files are committed; a test fails when they differ from a fresh render.
"""

from __future__ import annotations

from collections.abc import Callable

from fleet.deploy.k8s import render_k8s
from fleet.deploy.prometheus import render_prometheus
from fleet.deploy.supervisor import render_supervisor

#: ``fleet render <target>`` -> the files of ``deploy/<target>``
RENDERERS: dict[str, Callable[[], dict[str, str]]] = {
    "supervisor": render_supervisor,
    "k8s": render_k8s,
    "prometheus": render_prometheus,
}
