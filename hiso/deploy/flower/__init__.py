"""HiSo, DeComFL and the full-vector baselines on Flower (``flwr`` 1.x, Message API).

* :mod:`.records`: our message encodings inside Flower records (no arrays after set-up for the
  scalar-only methods; the model itself for FedAvg and friends);
* :mod:`.server`: federations whose rounds go through a Flower ``Grid``, reusing the
  protocol's sampling, seeds, aggregation, history and ledger;
* :mod:`.client`: the ClientApp's side, a :class:`hiso.protocol.ZOClient` kept on the node's disk;
* :mod:`.apps`: the ``ServerApp``/``ClientApp`` objects, Flower's simulation engine, and
  submission to a running SuperLink;
* :mod:`.local`: a SuperLink and N SuperNodes on the loopback interface, with byte counters.
"""

import os

# Flower reports usage to its servers unless told not to; a run must not reach the network.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
