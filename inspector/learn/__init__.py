"""The model lifecycle on a running line: register, promote, roll back (this package),
with the registry client below the stages (:mod:`inspector.registry`) and the worker's
hot swap in :mod:`inspector.detect.follow`."""
