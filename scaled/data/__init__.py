"""Data sets that polab builds from data shipped with installed packages (nothing is downloaded)."""
