"""The results store: one DuckDB file per database (:mod:`.database`), its schema and the check that a
file is ours (:mod:`.schema`), and a shard checked as untrusted input before ``bench merge``
(:mod:`.shards`). This package is the only place that holds SQL; everything else calls the
purpose-named readers and writers of :class:`Store`."""

from biasbench.harness.store.database import (
    DiskFull,
    JobKey,
    JobRecord,
    Store,
    StoreError,
    StoreMissing,
    check_shard_file,
    disk_full,
    is_space_error,
    lock_holder,
    pid_alive,
    process_start_time,
)

__all__ = [
    "DiskFull",
    "JobKey",
    "JobRecord",
    "Store",
    "StoreError",
    "StoreMissing",
    "check_shard_file",
    "disk_full",
    "is_space_error",
    "lock_holder",
    "pid_alive",
    "process_start_time",
]
