"""The report's Jinja2 templates and stylesheet.

This folder is shipped inside the package as ``reports.templates`` (see
``pyproject.toml``): a wheel installed without the repository renders
reports with the same files an editable checkout uses.
"""
