"""`make bench`: the gateway against direct REST calls to the same upstream, as ratios from the same run."""
