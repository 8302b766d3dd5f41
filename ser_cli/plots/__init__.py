"""Figures written by the stages (matplotlib, Agg, PNG), one module per kind of figure."""
