"""The embedded UniFi lab: a deterministic generator and a WSGI app serving the three APIs."""

from snowkit.unifi.lab.app import LabApp, lab_app
from snowkit.unifi.lab.generator import Lab, LabConfig, generate_lab

__all__ = ["Lab", "LabApp", "LabConfig", "generate_lab", "lab_app"]
