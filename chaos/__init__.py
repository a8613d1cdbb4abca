"""`make chaos`: faults and abuse against the gateway as a real process in front of a real Glance."""
