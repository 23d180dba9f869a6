"""Imports every built-in demo so that it registers itself."""
