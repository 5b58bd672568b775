"""Plots and HTML reports."""
