"""A tiny Django project, served by squall in ../server.py."""
