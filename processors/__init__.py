"""processors role family (see DESIGN.md)."""
