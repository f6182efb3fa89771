"""Training of the built-in generators on real data that ships inside installed packages."""
