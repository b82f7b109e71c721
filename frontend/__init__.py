"""The uvloop frontend: listeners, connections, validation, dispatch to worker rings.

It takes its settings as a `settings.FrontendSettings` handed over by the supervisor
and never imports `ringserve.runtime` or TensorFlow.
"""
