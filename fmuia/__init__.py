"""fmuia: the open toolkit for the FM_UIA 2026 ultrasound challenge."""

__version__ = "0.1.0"
