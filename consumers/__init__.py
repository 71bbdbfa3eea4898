"""consumers role family (see DESIGN.md)."""
