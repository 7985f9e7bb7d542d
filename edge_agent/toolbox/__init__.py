"""The tools themselves: the catalogue, the checks a call passes before it runs, and its sentence.

``registry`` (``@tool`` and JSON tool files), ``verify`` (every check before
execution), ``ratelimit`` (a verifier rule) and ``sentences`` (what a person
reads after a call ran). The sandbox that runs tools is its own package,
``edge_agent.sandbox``. A new kind of check on a call goes here.
"""
