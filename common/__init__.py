"""What both stages share: the cache format, devices, seeding, logging and CLI glue."""
