"""Seeing what pydron does: the event recorder, workers() and stats(), progress, logging, the run report."""
