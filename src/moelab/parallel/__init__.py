"""Running moelab's models across processes with torch.distributed: the layout, collectives and their clocks."""
