"""The 16-class stimulus sets (cue-conflict, edges, filled silhouettes, Stylized-16) (issue 4)."""
