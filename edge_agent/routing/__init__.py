"""Who answers a request: the small model, a bigger local one, the cloud, a queue, or nobody.

``confidence`` (calibrated P(success)), ``router`` (the policy), ``budget``
and ``ledger`` (what the cloud may cost and has cost), ``connectivity`` (is
the cloud reachable) and ``offload`` (the transports). The local ladder that
a request climbs before any of this is :mod:`edge_agent.ladder`, beside the
agent that runs it. A change to when a request leaves the device goes here.
"""
