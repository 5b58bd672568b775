"""``cryoset view``: a local web app for curation over a project folder.

:mod:`cryoset.view.project` reads the project's steps and writes every decision back through
the command line's workflow functions; :mod:`cryoset.view.app` serves the JSON API and the
static page in ``static/`` (plain HTML/JS/CSS shipped in the package). See docs/view.md.
"""
