"""Domain adaptation to a target without ratings: RecSys-DAN (UI-, U-, I-, H-DAN) and its
source-only baseline will live here, one module each, registered on import."""
