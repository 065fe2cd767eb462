"""Launching a sweep's cells and acting on them afterwards: what to run (`plan`), running it on a backend under
the sweep's launch lock (`launching`), finding, following and cancelling launched cells (`control`)."""
