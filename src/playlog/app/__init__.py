"""The application layer: use cases that join the domain rules to a store."""
