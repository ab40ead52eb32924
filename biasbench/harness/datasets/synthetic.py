"""The synthetic shape–texture demo world (issue 3). Registers demo-world/<split> datasets."""
