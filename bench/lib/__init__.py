"""The bench harness: what bench/run and its scenarios share (peers, berth's agent, measuring,
cleanup, the report). Standard library only."""
