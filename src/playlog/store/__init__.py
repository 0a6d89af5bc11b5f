"""Storage behind one interface (base.Store), with SQLite as the embedded default."""
