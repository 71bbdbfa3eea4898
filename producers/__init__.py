"""producers role family (see DESIGN.md)."""
